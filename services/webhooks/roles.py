"""The portal's roles (docs/sso.md), as this service's admin permissions: glob rules over ``app_label.codename``
(services/kit/roles.py). A person signing in through the portal gets the union of the roles' permissions.

- admin: everything (a superuser here);
- operator: edits endpoints (add, change, enable, disable, delete), reads their secrets (each read audited),
  resends messages and recovers an endpoint's failed messages; unlocks locked-out logins; reads the rest;
- auditor: reads everything (not endpoint secrets: that is ``read_secret``, not a ``view_`` permission);
- viewer: reads event types, endpoints (never their secrets), messages, deliveries, attempts and recoveries, not
  login attempts, users or groups.
"""

from __future__ import annotations

_READ = ("eventtype", "endpoint", "message", "delivery", "attempt", "recovery")

ROLE_RULES: dict[str, list[str]] = {
    "admin": ["*"],
    "operator": [
        "webhooks.view_*",
        "webhooks.add_endpoint",
        "webhooks.change_endpoint",
        "webhooks.delete_endpoint",
        "webhooks.read_secret",
        "webhooks.resend_message",
        "webhooks.add_recovery",
        "axes.view_accessattempt",
        "axes.delete_accessattempt",
    ],
    "auditor": ["*.view_*"],
    "viewer": [f"webhooks.view_{model}" for model in _READ],
}
