"""The ledger's entry in the service catalog (registered at start-up; see services/kit/catalog.py).

The version and URLs are added by the running process; everything else is kept here, next to the code it
describes. Edit it like code: a change is registered (and audited) when the new version starts.
"""

from services.kit.queues import service_queues

MANIFEST = {
    "display_name": "Ledger",
    "description": "Double-entry accounts, transactions, two-phase holds and balances.",
    # The service this process belongs to, and what it does there (its workers, relay and beat name it too).
    "part_of": "ledger",
    "role": "web",
    "team": {
        "slug": "payments-core",
        "name": "Payments core",
        "contact": "#atrium-payments",
        "on_call": "payments rota",
    },
    "tier": 1,
    "lifecycle": "production",
    "queues": service_queues("ledger"),
    "tags": ["money", "ledger"],
    # The portal signs the tokens it verifies (JWKS) and keeps its catalog entry and audit trail.
    "dependencies": [{"service": "portal"}, {"resource": "postgres"}, {"resource": "redis"}],
}
