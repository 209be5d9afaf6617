"""Portal roles (Django groups) and the permissions each one promises.

Rules are ``app_label.codename`` glob patterns; a leading ``!`` removes matches.
Later apps (audit, catalog, jobs) get their permissions assigned by the same
rules when they migrate, through the ``post_migrate`` sync.
"""

from __future__ import annotations

from typing import Any

from services.kit.roles import permission_keys_granted

ROLE_ADMIN = "admin"
ROLE_OPERATOR = "operator"
ROLE_AUDITOR = "auditor"
ROLE_VIEWER = "viewer"

ROLE_RULES: dict[str, list[str]] = {
    # Everything, except writing history by hand: audit rows are only added by the sequencer.
    ROLE_ADMIN: ["*", "!audit.add_*", "!audit.change_*", "!audit.delete_*"],
    # Runs the platform: catalog, machine clients, jobs (retry/revoke), unlocking locked-out logins (clearing
    # their failed attempts, services/kit/admin.py); reads the rest.
    ROLE_OPERATOR: [
        "identity.*",
        "catalog.*",
        "jobs.*",
        "axes.delete_accessattempt",
        "*.view_*",
        "!identity.delete_*",
        "!audit.*",
        "!auth.*",
    ],
    # Reads and verifies the audit trail, and may look at everything else.
    ROLE_AUDITOR: ["audit.view_*", "audit.verify_*", "audit.export_*", "*.view_*"],
    # Read-only on the platform, not the audit trail or user accounts.
    ROLE_VIEWER: ["identity.view_*", "catalog.view_*", "jobs.view_*"],
}
ROLES = tuple(ROLE_RULES)


def role_permission_keys(role: str, all_keys: list[str]) -> set[str]:
    """The ``app_label.codename`` keys ``role`` grants out of ``all_keys``."""
    return permission_keys_granted(ROLE_RULES[role], all_keys)


def roles_sync(apps: Any = None) -> None:
    """Create the role groups and grant each the permissions its rules match (additive)."""
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permissions = {
        f"{p.content_type.app_label}.{p.codename}": p for p in Permission.objects.select_related("content_type")
    }
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        wanted = role_permission_keys(role, list(permissions))
        group.permissions.add(*(permissions[k] for k in wanted))


def roles_sync_after_migrate(sender: Any, **kwargs: Any) -> None:
    # Runs once per migrated app; only the last call sees every permission, and
    # repeating an additive sync is cheap.
    apps = kwargs.get("apps")
    if apps is None:
        # ``flush`` (and so every TransactionTestCase) sends post_migrate without a
        # migration state; it has just recreated the permissions, so recreate the roles too.
        from django.apps import apps as installed_apps

        apps = installed_apps
    try:
        apps.get_model("auth", "Group")
        apps.get_model("identity", "MachineClient")
    except LookupError:
        return
    roles_sync(apps)


def user_roles(user: Any) -> list[str]:
    """The portal roles a user holds (superusers hold admin)."""
    if not getattr(user, "is_authenticated", False):
        return []
    names = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    if user.is_superuser:
        names.add(ROLE_ADMIN)
    return sorted(names, key=ROLES.index)
