"""The portal roles (Django groups) created by the migrations, and what each may do."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from portal.identity.roles import ROLES, user_roles
from tests.portal.factories import superuser, user_with_role

pytestmark = pytest.mark.django_db


def _perms(role: str) -> set[str]:
    group = Group.objects.get(name=role)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def _all_perms() -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in Permission.objects.select_related("content_type")}


def test_migrations_create_the_four_role_groups():
    assert set(Group.objects.filter(name__in=ROLES).values_list("name", flat=True)) == {
        "admin",
        "operator",
        "auditor",
        "viewer",
    }


def test_viewer_may_view_machine_clients_but_not_change_them():
    perms = _perms("viewer")

    assert "identity.view_machineclient" in perms
    assert not {"identity.add_machineclient", "identity.change_machineclient", "identity.delete_machineclient"} & perms
    # read-only, and nothing about user accounts
    assert all(p.split(".")[1].startswith("view_") for p in perms), perms
    assert not any(p.startswith("auth.") for p in perms)


def test_operator_manages_machine_clients_but_cannot_delete_them_or_touch_accounts():
    perms = _perms("operator")

    assert {"identity.view_machineclient", "identity.add_machineclient", "identity.change_machineclient"} <= perms
    assert "identity.delete_machineclient" not in perms
    assert not [p for p in perms if p.startswith("auth.")]
    # reads everything else
    assert "sessions.view_session" in perms


def test_auditor_only_views():
    perms = _perms("auditor")

    assert {"identity.view_machineclient", "auth.view_user", "admin.view_logentry"} <= perms
    assert all(p.split(".")[1].startswith(("view_", "verify_", "export_")) for p in perms), perms


def test_admin_holds_every_permission_except_rewriting_the_audit_trail():
    perms = _perms("admin")

    expected = {p for p in _all_perms() if not p.startswith(("audit.add_", "audit.change_", "audit.delete_"))}
    assert perms == expected
    assert {"identity.delete_machineclient", "auth.add_user", "auth.change_group"} <= perms


def test_a_users_permissions_come_from_their_role():
    # given an operator and a viewer
    operator, viewer = user_with_role("operator"), user_with_role("viewer")

    # then the role decides what each may do
    assert operator.has_perm("identity.add_machineclient")
    assert not operator.has_perm("identity.delete_machineclient")
    assert viewer.has_perm("identity.view_machineclient")
    assert not viewer.has_perm("identity.change_machineclient")


def test_user_roles_lists_held_roles_and_superusers_hold_admin():
    # given a user in two roles, a superuser with no groups and a user with none
    both = user_with_role("viewer")
    both.groups.add(Group.objects.get(name="auditor"))

    # then roles are listed in the canonical order
    assert user_roles(both) == ["auditor", "viewer"]
    assert user_roles(superuser()) == ["admin"]
    assert user_roles(user_with_role(None)) == []


@pytest.mark.django_db(transaction=True)
def test_roles_survive_a_database_flush():
    # given a database flushed the way TransactionTestCase and `manage.py flush` do it
    call_command("flush", interactive=False, verbosity=0)

    # then the roles are recreated along with the permissions they grant
    assert set(Group.objects.filter(name__in=ROLES).values_list("name", flat=True)) == set(ROLES)
    assert "identity.view_machineclient" in _perms("viewer")
    assert "identity.add_machineclient" in _perms("operator")
    assert _perms("admin") == {
        p for p in _all_perms() if not p.startswith(("audit.add_", "audit.change_", "audit.delete_"))
    }
