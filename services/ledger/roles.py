"""The portal's roles (docs/sso.md), as this service's admin permissions: glob rules over ``app_label.codename``
(services/kit/roles.py). A person signing in through the portal gets the union of the roles' permissions.

The ledger's admin is read-only (accounts, transactions and postings change only through the API):

- admin: everything (a superuser here);
- operator: reads the ledger and unlocks locked-out logins;
- auditor: reads everything;
- viewer: reads accounts, transactions and postings, not login attempts, users or groups.
"""

from __future__ import annotations

ROLE_RULES: dict[str, list[str]] = {
    "admin": ["*"],
    "operator": ["ledger.view_*", "axes.view_accessattempt", "axes.delete_accessattempt"],
    "auditor": ["*.view_*"],
    "viewer": ["ledger.view_account", "ledger.view_transaction", "ledger.view_posting"],
}
