"""The portal's roles (docs/sso.md), as this service's admin permissions: glob rules over ``app_label.codename``
(services/kit/roles.py). A person signing in through the portal gets the union of the roles' permissions.

- admin: everything (a superuser here);
- operator: reviews payments (cancels those not yet processing, approves or rejects those in review) and edits
  the screening rules (currency limits, velocity limits, blocked accounts); unlocks locked-out logins; reads the
  rest. Retries are the job dashboard's (the portal's operator role), not this admin's;
- auditor: reads everything;
- viewer: reads payments and the screening rules, not what is secret — stored idempotent answers (callers'
  bodies), login attempts, users and groups.
"""

from __future__ import annotations

_SCREENING = ("currencylimit", "velocitylimit", "blockedaccount")

ROLE_RULES: dict[str, list[str]] = {
    "admin": ["*"],
    "operator": [
        "payments.view_*",
        "payments.change_payment",
        *(f"payments.{verb}_{model}" for model in _SCREENING for verb in ("add", "change", "delete")),
        "axes.view_accessattempt",
        "axes.delete_accessattempt",
    ],
    "auditor": ["*.view_*"],
    "viewer": ["payments.view_payment", *(f"payments.view_{model}" for model in _SCREENING)],
}
