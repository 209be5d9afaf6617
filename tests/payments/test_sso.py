"""The payments admin's side of single sign-on, in process (services/kit/sso.py, services/payments/roles.py): the
portal's roles mapped to this service's permissions, users created and re-synced from the portal's claims (role
changes and refusals audited), the admin's login page going to the portal, and the break-glass superuser.
The whole flow across real processes and a real browser is tests/e2e/test_sso_browser.py."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from services.kit.models import OutboxEvent
from services.kit.sso import SignInRefused, breakglass_expired, user_sync

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _relay_off(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"


def events(action: str) -> list[dict]:
    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    return [r.payload for r in rows if r.payload["action"] == action]


def claims(username: str = "olivia", *roles: str, sub: str = "42") -> dict:
    return {"sub": sub, "preferred_username": username, "email": f"{username}@example.test", "roles": list(roles)}


def perms(user) -> set[str]:
    user = get_user_model().objects.get(pk=user.pk)  # no permission cache
    return user.get_all_permissions()


def test_an_operator_may_review_payments_and_edit_screening_rules_but_not_users():
    user = user_sync(claims=claims("olivia", "operator"))

    granted = perms(user)
    assert {
        "payments.view_payment",
        "payments.change_payment",
        "payments.add_currencylimit",
        "payments.change_velocitylimit",
        "payments.delete_blockedaccount",
        "payments.view_idempotencykey",
    } <= granted
    assert "auth.change_user" not in granted
    assert "payments.delete_payment" not in granted
    assert user.is_staff
    assert not user.is_superuser
    assert not user.has_usable_password()


def test_a_viewer_reads_payments_and_rules_but_nothing_secret_and_changes_nothing():
    user = user_sync(claims=claims("vera", "viewer"))

    granted = perms(user)
    assert granted == {
        "payments.view_payment",
        "payments.view_currencylimit",
        "payments.view_velocitylimit",
        "payments.view_blockedaccount",
    }


def test_an_auditor_reads_everything_and_changes_nothing():
    granted = perms(user_sync(claims=claims("audrey", "auditor")))

    assert {"payments.view_idempotencykey", "auth.view_user", "axes.view_accessattempt"} <= granted
    assert not [p for p in granted if not p.split(".", 1)[1].startswith("view_")]


def test_the_portal_admin_role_is_a_superuser_here_and_unknown_roles_are_ignored():
    user = user_sync(claims=claims("ada", "admin", "astronaut"))

    assert user.is_superuser
    assert list(user.groups.values_list("name", flat=True)) == ["admin"]


def test_a_role_change_at_the_portal_is_resynced_and_audited_with_the_portal_identity():
    # given an operator who signed in before
    user_sync(claims=claims("olivia", "operator", sub="7"))
    assert len(events("auth.role.changed")) == 1

    # when they sign in again as a viewer only
    user = user_sync(claims=claims("olivia", "viewer", sub="7"))

    # then their groups and permissions follow, and the change is audited once more
    assert list(user.groups.values_list("name", flat=True)) == ["viewer"]
    assert "payments.change_currencylimit" not in perms(user)
    changed = events("auth.role.changed")
    assert len(changed) == 2
    assert changed[-1]["changes"] == {"roles": [["operator"], ["viewer"]]}
    assert changed[-1]["actor"] == {"type": "user", "id": "7", "display": "olivia"}

    # and signing in with the same roles records no change
    user_sync(claims=claims("olivia", "viewer", sub="7"))
    assert len(events("auth.role.changed")) == 2


def test_a_person_with_no_role_is_refused_and_a_former_user_loses_access():
    # given a former operator
    user_sync(claims=claims("olivia", "operator"))

    # when the portal says they hold no role any more
    with pytest.raises(SignInRefused) as refused:
        user_sync(claims=claims("olivia"))

    # then the sign-in is refused and what they held here is taken away (audited)
    assert refused.value.reason == "no_role"
    user = get_user_model().objects.get(username="olivia")
    assert (user.is_staff, user.is_superuser, user.groups.count()) == (False, False, 0)
    assert events("auth.role.changed")[-1]["changes"] == {"roles": [["operator"], []]}


def test_a_stranger_with_no_role_gets_no_user_here():
    with pytest.raises(SignInRefused):
        user_sync(claims=claims("stranger"))

    assert not get_user_model().objects.filter(username="stranger").exists()


def test_a_user_deactivated_here_is_refused_whatever_the_portal_says():
    user = user_sync(claims=claims("olivia", "operator"))
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)

    with pytest.raises(SignInRefused) as refused:
        user_sync(claims=claims("olivia", "admin"))

    assert refused.value.reason == "inactive"
    assert not get_user_model().objects.get(pk=user.pk).is_superuser


@pytest.mark.parametrize("local", ["breakglass-0a1b2c", "root"])
def test_a_portal_sign_in_never_takes_over_a_local_account_of_the_same_name(local: str):
    # given a local account with a password here (break-glass, or made with createsuperuser)
    get_user_model().objects.create_superuser(username=local, password="a local secret 42")

    # when a portal person with that name signs in, even as a mere viewer
    with pytest.raises(SignInRefused) as refused:
        user_sync(claims=claims(local, "viewer"))

    # then it is refused, and the local account is untouched
    assert refused.value.reason == "local_account"
    user = get_user_model().objects.get(username=local)
    assert user.is_superuser
    assert user.check_password("a local secret 42")
    assert not user.groups.exists()


def test_a_portal_name_that_looks_like_breakglass_is_refused_even_with_no_local_account():
    with pytest.raises(SignInRefused) as refused:
        user_sync(claims=claims("breakglass-fake", "admin"))

    assert refused.value.reason == "local_account"
    assert not get_user_model().objects.filter(username="breakglass-fake").exists()


def test_claims_without_a_user_are_refused():
    with pytest.raises(SignInRefused) as refused:
        user_sync(claims={"sub": "1", "roles": ["admin"]})

    assert refused.value.reason == "bad_token"


def test_with_a_client_configured_the_admin_login_goes_to_the_portal(settings):
    settings.OIDC_RP_CLIENT_ID = "payments-admin"
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://portal.example.test/o/authorize"

    # the admin sends an anonymous visitor to its login page, which starts the sign-in
    response = Client().get("/admin/payments/payment/")
    assert response.status_code == 302
    login = Client().get(response["Location"])
    assert login.status_code == 302
    assert login["Location"] == "/oidc/authenticate?next=%2Fadmin%2Fpayments%2Fpayment%2F"

    # which redirects to the portal with PKCE (S256), a state and a nonce
    client = Client()
    started = client.get(login["Location"])
    assert started.status_code == 302
    target = urlsplit(started["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == "https://portal.example.test/o/authorize"
    query = parse_qs(target.query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == ["payments-admin"]
    assert query["redirect_uri"] == ["http://testserver/oidc/callback"]
    assert {"state", "nonce", "code_challenge"} <= set(query)
    assert query["scope"] == ["openid profile email"]


def test_without_a_client_the_admin_keeps_its_own_login_form():
    response = Client().get("/admin/login/")

    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_a_callback_without_sso_configured_or_with_a_forged_state_is_a_page_not_a_500(settings):
    settings.OIDC_RP_CLIENT_ID = "payments-admin"

    response = Client().get("/oidc/callback?code=x&state=forged")

    assert response.status_code == 400
    assert b'data-reason="bad_state"' in response.content
    refused = events("auth.login.refused")
    assert [e["metadata"]["reason"] for e in refused] == ["bad_state"]


def test_an_error_from_the_portal_is_refused_with_a_page(settings):
    settings.OIDC_RP_CLIENT_ID = "payments-admin"

    response = Client().get("/oidc/callback?error=access_denied&state=s")

    assert response.status_code == 403
    assert b'data-reason="portal_error"' in response.content


def test_breakglass_creates_a_temporary_superuser_that_logs_in_locally_audited():
    # given the break-glass command, run with a reason
    out = StringIO()
    call_command("breakglass_superuser", "--reason", "portal down, incident 42", stdout=out)
    lines = dict(line.split() for line in out.getvalue().splitlines()[1:])
    username, password = lines["username"], lines["password"]

    # then a superuser exists, and its creation is audited with the reason
    user = get_user_model().objects.get(username=username)
    assert user.is_superuser
    created = events("auth.breakglass.created")
    assert created[-1]["object"]["id"] == username
    assert created[-1]["metadata"]["reason"] == "portal down, incident 42"

    # and it logs in through the local form (audited), and works
    client = Client()
    response = client.post("/admin/login/local/", {"username": username, "password": password, "next": "/admin/"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert client.get("/admin/payments/payment/").status_code == 200
    assert events("auth.login.succeeded")[-1]["metadata"] == {"method": "breakglass"}


def test_an_expired_breakglass_session_ends_and_the_account_is_deactivated(settings):
    call_command("breakglass_superuser", "--reason", "portal down, incident 43", stdout=StringIO())
    user = get_user_model().objects.get(username__startswith="breakglass-")
    client = Client()
    client.force_login(user)
    assert client.get("/admin/").status_code == 200

    # when its time is up
    get_user_model().objects.filter(pk=user.pk).update(
        date_joined=timezone.now() - dt.timedelta(minutes=settings.ATRIUM_SSO_BREAKGLASS_MINUTES + 1)
    )

    # then its next request ends the session and the account
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/local/"
    assert not get_user_model().objects.get(pk=user.pk).is_active
    assert events("auth.breakglass.expired")[-1]["object"]["id"] == user.username
    assert client.get("/admin/").status_code == 302


def test_breakglass_needs_a_reason_and_only_breakglass_accounts_expire():
    with pytest.raises(CommandError):
        call_command("breakglass_superuser", "--reason", "  ", stdout=StringIO())

    person = user_sync(claims=claims("olivia", "operator"))
    person.date_joined = timezone.now() - dt.timedelta(days=365)
    assert not breakglass_expired(person)
