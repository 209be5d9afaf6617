"""The payments service's entry in the service catalog (registered at start-up; see services/kit/catalog.py).

The version and URLs are added by the running process; everything else is kept here, next to the code it
describes. Edit it like code: a change is registered (and audited) when the new version starts.
"""

from services.kit.queues import service_queues

MANIFEST = {
    "display_name": "Payments",
    "description": "Payment orders: idempotent creation, screening rules, holds and settlement in the ledger.",
    # The service this process belongs to, and what it does there (its workers, relay and beat name it too).
    "part_of": "payments",
    "role": "web",
    "team": {
        "slug": "payments-core",
        "name": "Payments core",
        "contact": "#atrium-payments",
        "on_call": "payments rota",
    },
    "tier": 1,
    "lifecycle": "production",
    "queues": service_queues("payments"),
    "tags": ["money", "payments"],
    # Holds and settles in the ledger; screens with the risk service (when RISK_URL is set); the portal signs
    # tokens and keeps the catalog and audit trail.
    "dependencies": [
        {"service": "ledger"},
        {"service": "risk"},
        {"service": "portal"},
        {"resource": "postgres"},
        {"resource": "redis"},
    ],
}
