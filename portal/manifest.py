"""The portal's entry in its own service catalog (registered at start-up; see services/kit/catalog.py).

The version and URLs are added by the running process; everything else is kept here, next to the code it
describes. Edit it like code: a change is registered (and audited) when the new version starts.
"""

from services.kit.queues import service_queues

MANIFEST = {
    "display_name": "Portal",
    "description": "Admin UI, identity provider (tokens, JWKS), service catalog, audit trail and job dashboard.",
    # The service this process belongs to, and what it does there (its workers, relay and beat name it too).
    "part_of": "portal",
    "role": "web",
    "team": {"slug": "platform", "name": "Platform", "contact": "#atrium-platform", "on_call": "platform rota"},
    "tier": 1,
    "lifecycle": "production",
    "queues": service_queues("portal"),
    "tags": ["identity", "catalog", "audit"],
    "dependencies": [{"resource": "postgres"}, {"resource": "redis"}],
}
