"""The portal's roles (docs/sso.md), as this service's admin permissions: glob rules over ``app_label.codename``
(services/kit/roles.py). A person signing in through the portal gets the union of the roles' permissions.

- admin: everything (a superuser here);
- operator: in the admin, disables an endpoint (with a reason) and enables it (``change_endpoint``), resends a message
  to an endpoint (``resend_message``) and recovers an endpoint's failed messages since a time (``add_recovery``);
  unlocks locked-out logins; reads the rest. Endpoints are created, changed and deleted through the API (their URL
  goes through the SSRF guard there), so the admin shows them read-only; ``add_/delete_endpoint`` and
  ``read_secret`` are held for the API's operator actor, never offered as admin forms;
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
