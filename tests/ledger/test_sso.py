"""The ledger admin's side of single sign-on (services/kit/sso.py, services/ledger/roles.py): the same kit as
payments' (tests/payments/test_sso.py), with the ledger's own mapping of the portal's roles, and its admin titled
after the service."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from services.kit.sso import user_sync

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _relay_off(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"


def _permissions(role: str) -> set[str]:
    user = user_sync(claims={"sub": "9", "preferred_username": f"p-{role}", "roles": [role]})
    return get_user_model().objects.get(pk=user.pk).get_all_permissions()


def test_ledger_roles_read_the_ledger_and_only_operators_unlock_logins():
    assert _permissions("viewer") == {"ledger.view_account", "ledger.view_transaction", "ledger.view_posting"}
    operator = _permissions("operator")
    assert {"ledger.view_account", "axes.delete_accessattempt"} <= operator
    assert not [p for p in operator if p.startswith("ledger.") and not p.startswith("ledger.view_")]
    auditor = _permissions("auditor")
    assert "auth.view_user" in auditor
    assert "axes.delete_accessattempt" not in auditor


def test_a_viewer_signed_in_reads_accounts_in_an_admin_named_after_the_ledger():
    user = user_sync(claims={"sub": "3", "preferred_username": "vic", "roles": ["viewer"]})
    client = Client()
    client.force_login(user, backend="services.kit.sso.SSOBackend")

    page = client.get("/admin/")

    assert page.status_code == 200
    assert "<title>Ledger administration | Atrium ledger admin</title>" in page.content.decode()
    assert client.get("/admin/ledger/account/").status_code == 200
    assert client.get("/admin/axes/accessattempt/").status_code == 403
