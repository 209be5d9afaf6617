"""The webhooks service's entry in the service catalog (registered at start-up; see services/kit/catalog.py).

The version and URLs are added by the running process; everything else is kept here, next to the code it
describes. Edit it like code: a change is registered (and audited) when the new version starts.
"""

from services.kit.queues import service_queues

MANIFEST = {
    "display_name": "Webhooks",
    "description": "Standard Webhooks delivery of payment and ledger events: signed, retried, recoverable, "
    "isolated per endpoint, behind an SSRF guard.",
    # The service this process belongs to, and what it does there (its workers, relay, dispatcher name it too).
    "part_of": "webhooks",
    "role": "web",
    "team": {
        "slug": "payments-core",
        "name": "Payments core",
        "contact": "#atrium-payments",
        "on_call": "payments rota",
    },
    "tier": 2,
    "lifecycle": "production",
    "queues": service_queues("webhooks"),
    "tags": ["events", "webhooks"],
    # The portal signs the tokens it verifies (JWKS) and keeps its catalog entry and audit trail; payments and the
    # ledger send it their events through their outboxes (it never calls them).
    "dependencies": [{"service": "portal"}, {"resource": "postgres"}, {"resource": "redis"}],
}
