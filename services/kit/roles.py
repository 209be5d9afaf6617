"""Role rules: which permissions a role grants, as ``app_label.codename`` glob patterns.

A rule list like ``["payments.view_*", "!payments.view_idempotencykey"]`` grants every permission matching a
pattern, then removes those matching a ``!`` pattern. The portal's roles (portal/identity/roles.py) and each
service's mapping of the portal's roles to its own permissions (``<service>/roles.py``, docs/sso.md) are
written this way.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase


def permission_keys_granted(rules: Iterable[str], all_keys: Iterable[str]) -> set[str]:
    """The ``app_label.codename`` keys ``rules`` grant out of ``all_keys``."""
    rules, all_keys = list(rules), list(all_keys)
    keys: set[str] = set()
    for rule in rules:
        if not rule.startswith("!"):
            keys.update(k for k in all_keys if fnmatchcase(k, rule))
    for rule in rules:
        if rule.startswith("!"):
            keys.difference_update(k for k in all_keys if fnmatchcase(k, rule[1:]))
    return keys
