"""People and machine clients in the portal are audited: logins, logouts, user/role changes, clients, tokens.

Each event is an outbox row written with the change; events of HTTP requests name the request id, source IP
and user agent; secrets and passwords never appear in them.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client

from portal.identity import services as identity
from portal.identity.api.views import TokenView
from portal.identity.errors import InvalidClient, ScopeNotAllowed
from portal.identity.models import MachineClient
from services.kit.models import OutboxEvent
from tests.portal.factories import machine_client, superuser
from tests.portal.helpers import TOKEN_URL

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase 42"
USER_AGENT = "pytest-audit/1.0"


class UpgradedHasher(MD5PasswordHasher):
    """A cheap "newer" hasher: logging in with an MD5 hash under it re-hashes the password."""

    algorithm = "atrium_test_md5"


@pytest.fixture(autouse=True)
def _relay_off(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"


@pytest.fixture
def admin_client(client: Client) -> Client:
    client.force_login(superuser(username="root"))
    OutboxEvent.objects.all().delete()
    return client


def events(action: str | None = None) -> list[dict]:
    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    return [r.payload for r in rows if action is None or r.payload["action"] == action]


def one(action: str) -> dict:
    found = events(action)
    assert len(found) == 1, (action, [e["action"] for e in events()])
    return found[0]


def assert_from_http(event: dict) -> None:
    assert event["request_id"]
    assert event["source_ip"] == "127.0.0.1"
    assert event["user_agent"] == USER_AGENT


# ------------------------------------------------------------------------------------------- logins


def test_failed_login_successful_login_and_logout_through_the_admin(client):
    # given a staff user
    user = get_user_model().objects.create_user("dana", password=PASSWORD, is_staff=True)
    OutboxEvent.objects.all().delete()

    # when they mistype their password, log in, then log out, through the admin's forms
    response = client.post(
        "/admin/login/", {"username": "dana", "password": "wrong password"}, HTTP_USER_AGENT=USER_AGENT
    )
    assert response.status_code == 200  # the form again, with an error
    response = client.post("/admin/login/", {"username": "dana", "password": PASSWORD}, HTTP_USER_AGENT=USER_AGENT)
    assert response.status_code == 302
    assert client.post("/admin/logout/", HTTP_USER_AGENT=USER_AGENT).status_code == 200

    # then the failure names the attempted username (no id: nobody proved who they are), never the password
    failed = one("auth.login.failed")
    assert failed["outcome"] == "failure"
    assert failed["actor"] == {"type": "user", "id": "", "display": "dana"}
    assert failed["object"] == {"type": "user", "id": ""}
    assert_from_http(failed)
    assert "wrong password" not in json.dumps(failed)
    assert PASSWORD not in json.dumps(events())

    # and the login and logout name the user
    succeeded = one("auth.login.succeeded")
    assert succeeded["outcome"] == "success"
    assert succeeded["actor"] == {"type": "user", "id": str(user.pk), "display": "dana"}
    assert_from_http(succeeded)
    logout = one("auth.logout")
    assert logout["actor"] == {"type": "user", "id": str(user.pk), "display": "dana"}
    assert logout["object"] == {"type": "user", "id": str(user.pk)}
    assert_from_http(logout)

    # and the login's last_login stamp is not a user change
    assert not events("portal.user.changed")
    assert [e["action"] for e in events()] == ["auth.login.failed", "auth.login.succeeded", "auth.logout"]


def test_a_failed_login_for_an_unknown_user_holds_no_password(client):
    client.post("/admin/login/", {"username": "nobody-here", "password": "hunter2-hunter2"}, HTTP_USER_AGENT=USER_AGENT)

    failed = one("auth.login.failed")
    assert failed["actor"]["display"] == "nobody-here"
    assert failed["metadata"] == {"username": "nobody-here"}
    assert "hunter2" not in json.dumps(failed)


def test_a_password_rehashed_at_login_is_a_change_by_the_user_not_a_password_change(client, settings):
    # given a user whose stored hash is of an older hasher than the preferred one
    user = get_user_model().objects.create_user("olga", password=PASSWORD, is_staff=True)
    settings.PASSWORD_HASHERS = [
        "tests.portal.test_audit_events.UpgradedHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    OutboxEvent.objects.all().delete()

    # when they log in (Django re-hashes the password with the preferred hasher)
    client.post("/admin/login/", {"username": "olga", "password": PASSWORD}, HTTP_USER_AGENT=USER_AGENT)

    # then the new hash is recorded as a change by the user, marked as a re-hash, its values redacted
    user.refresh_from_db()
    assert user.password.startswith("atrium_test_md5$")
    changed = one("portal.user.changed")
    assert changed["actor"] == {"type": "user", "id": str(user.pk), "display": "olga"}
    assert changed["changes"] == {"password": ["[redacted]", "[redacted]"]}
    assert changed["metadata"] == {"reason": "password_hash_upgraded"}
    assert user.password not in json.dumps(changed)


# ----------------------------------------------------------------------------- users, groups, grants


def test_creating_a_user_in_the_admin_is_audited_without_the_password(admin_client):
    response = admin_client.post(
        "/admin/auth/user/add/",
        {"username": "frank", "usable_password": "true", "password1": PASSWORD, "password2": PASSWORD},
        HTTP_USER_AGENT=USER_AGENT,
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    frank = get_user_model().objects.get(username="frank")

    created = one("portal.user.created")
    assert created["object"] == {"type": "user", "id": str(frank.pk)}
    assert created["actor"]["display"] == "root"
    assert created["changes"]["username"] == [None, "frank"]
    assert created["changes"]["password"] == [None, "[redacted]"]
    assert_from_http(created)
    added = one("portal.admin.addition")
    assert added["object"] == {"type": "auth.user", "id": str(frank.pk)}
    assert added["metadata"]["admin_user"] == "root"
    everything = json.dumps(events())
    assert PASSWORD not in everything
    assert frank.password not in everything


def test_changing_a_user_and_their_groups_in_the_admin_is_audited(admin_client):
    # given a user and a group
    frank = get_user_model().objects.create_user("frank", email="frank@example.test", password=PASSWORD)
    reviewers = Group.objects.create(name="reviewers")
    OutboxEvent.objects.all().delete()

    # when an admin makes them staff, changes their email and puts them in the group
    response = admin_client.post(
        f"/admin/auth/user/{frank.pk}/change/",
        {
            "username": "frank",
            "first_name": "",
            "last_name": "",
            "email": "frank@atrium.test",
            "is_active": "on",
            "is_staff": "on",
            "groups": [str(reviewers.pk)],
            "user_permissions": [],
            "date_joined_0": frank.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": frank.date_joined.strftime("%H:%M:%S"),
            "_save": "Save",
        },
        HTTP_USER_AGENT=USER_AGENT,
    )
    assert response.status_code == 302, response.content.decode()[:3000]

    # then the user's change holds before and after of what changed, and nothing about the password
    changed = one("portal.user.changed")
    assert changed["changes"] == {
        "email": ["frank@example.test", "frank@atrium.test"],
        "is_staff": [False, True],
    }
    assert changed["actor"]["display"] == "root"
    assert_from_http(changed)

    # and the membership change holds the groups before and after
    groups = one("portal.user.groups_changed")
    assert groups["object"] == {"type": "user", "id": str(frank.pk)}
    assert groups["changes"] == {"groups": [[], ["reviewers"]]}
    assert groups["metadata"] == {"added": ["reviewers"], "removed": []}
    assert_from_http(groups)

    # and the admin's own record of the change, with its message
    admin_change = one("portal.admin.change")
    assert admin_change["object"] == {"type": "auth.user", "id": str(frank.pk)}
    assert "Changed" in admin_change["metadata"]["change_message"]
    assert admin_change["metadata"]["admin_user"] == "root"
    assert not events("portal.user.permissions_changed")  # unchanged grants are not an event


def test_changing_a_password_in_the_admin_shows_only_that_it_changed(admin_client):
    frank = get_user_model().objects.create_user("frank", password=PASSWORD)
    OutboxEvent.objects.all().delete()

    response = admin_client.post(
        f"/admin/auth/user/{frank.pk}/password/",
        {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
        HTTP_USER_AGENT=USER_AGENT,
    )
    assert response.status_code == 302, response.content.decode()[:3000]

    changed = one("portal.user.changed")
    assert changed["changes"] == {"password": ["[redacted]", "[redacted]"]}
    assert changed["actor"]["display"] == "root"
    assert_from_http(changed)
    frank.refresh_from_db()
    everything = json.dumps(events())
    for secret in (PASSWORD, NEW_PASSWORD, frank.password):
        assert secret not in everything


def test_changing_a_groups_permissions_in_the_admin_is_audited(admin_client):
    # given a group with one permission
    view = Permission.objects.get(content_type__app_label="identity", codename="view_machineclient")
    change = Permission.objects.get(content_type__app_label="identity", codename="change_machineclient")
    group = Group.objects.create(name="client-keepers")
    group.permissions.add(view)
    OutboxEvent.objects.all().delete()

    # when an admin swaps it for another
    response = admin_client.post(
        f"/admin/auth/group/{group.pk}/change/",
        {"name": "client-keepers", "permissions": [str(change.pk)], "_save": "Save"},
        HTTP_USER_AGENT=USER_AGENT,
    )
    assert response.status_code == 302, response.content.decode()[:3000]

    # then every step of the swap shows the group's grants before and after
    grants = events("portal.group.permissions_changed")
    assert [e["changes"]["permissions"] for e in grants] == [
        [["identity.view_machineclient"], []],
        [[], ["identity.change_machineclient"]],
    ]
    assert {e["object"]["id"] for e in grants} == {str(group.pk)}
    for event in grants:
        assert_from_http(event)
    # and saving the unchanged name is not a group change
    assert not events("portal.group.changed")
    assert one("portal.admin.change")["object"] == {"type": "auth.group", "id": str(group.pk)}


def test_group_lifecycle_and_grants_from_either_side_are_audited():
    user = get_user_model().objects.create_user("erin", password=PASSWORD)
    permission = Permission.objects.get(content_type__app_label="identity", codename="view_machineclient")
    OutboxEvent.objects.all().delete()

    group = Group.objects.create(name="reviewers")
    group.name = "senior-reviewers"
    group.save()
    group.user_set.add(user)  # from the group's side
    user.user_permissions.add(permission)
    user.user_permissions.clear()
    group_id = group.pk
    group.delete()

    assert one("portal.group.created")["changes"] == {"name": [None, "reviewers"]}
    assert one("portal.group.changed")["changes"] == {"name": ["reviewers", "senior-reviewers"]}
    membership = one("portal.user.groups_changed")
    assert membership["object"] == {"type": "user", "id": str(user.pk)}
    assert membership["changes"] == {"groups": [[], ["senior-reviewers"]]}
    grants = events("portal.user.permissions_changed")
    assert [e["changes"] for e in grants] == [
        {"user_permissions": [[], ["identity.view_machineclient"]]},
        {"user_permissions": [["identity.view_machineclient"], []]},
    ]
    deleted = one("portal.group.deleted")
    assert deleted["object"] == {"type": "group", "id": str(group_id)}
    assert deleted["changes"] == {"name": ["senior-reviewers", None]}


def test_deleting_a_user_is_audited():
    user = get_user_model().objects.create_user("gone", password=PASSWORD)
    user_id = user.pk
    OutboxEvent.objects.all().delete()

    user.delete()

    deleted = one("portal.user.deleted")
    assert deleted["object"] == {"type": "user", "id": str(user_id)}
    assert deleted["changes"]["username"] == ["gone", None]
    assert deleted["changes"]["password"] == ["[redacted]", None]


# ---------------------------------------------------------------------------------- machine clients


def test_client_lifecycle_through_the_services_never_shows_a_secret():
    made = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    new_secret = identity.client_rotate_secret(client=made.client)
    identity.client_revoke(client=made.client)

    created = one("portal.client.created")
    assert created["object"] == {"type": "machine_client", "id": made.client.id}
    assert created["changes"]["allowed_scopes"] == [None, ["ledger:read"]]
    assert created["metadata"]["scopes"] == ["ledger:read"]
    rotated = one("portal.client.secret_rotated")
    assert rotated["object"] == {"type": "machine_client", "id": made.client.id}
    assert rotated["changes"]["secret_rotated_at"][0] is None
    assert rotated["changes"]["secret_rotated_at"][1]
    revoked = one("portal.client.revoked")
    assert revoked["changes"]["is_active"] == [True, False]
    assert revoked["changes"]["revoked_at"][0] is None
    # no request: the portal itself acted
    assert created["actor"] == {"type": "system", "id": "portal", "display": "portal"}

    # the rotation event holds neither the new secret nor its hash, and no event holds any secret
    rotation = json.dumps(rotated)
    assert new_secret not in rotation
    assert identity.secret_hash(new_secret) not in rotation
    everything = json.dumps(events())
    for secret in (made.secret, new_secret, identity.secret_hash(new_secret), identity.secret_hash(made.secret)):
        assert secret not in everything


def test_client_lifecycle_through_the_admin_names_the_admin_and_the_request(admin_client):
    # when an admin adds a client, changes its scopes, rotates its secret and revokes it
    response = admin_client.post(
        "/admin/identity/machineclient/add/",
        {
            "name": "billing-export",
            "description": "",
            "allowed_audiences": ["ledger"],
            "allowed_scopes": ["ledger:read"],
            "token_ttl_seconds": "600",
            "_save": "Save",
        },
        HTTP_USER_AGENT=USER_AGENT,
    )
    assert response.status_code == 200, response.content.decode()[:3000]
    made = MachineClient.objects.get(name="billing-export")
    response = admin_client.post(
        f"/admin/identity/machineclient/{made.pk}/change/",
        {
            "name": "billing-export",
            "description": "",
            "allowed_audiences": ["ledger"],
            "allowed_scopes": ["ledger:read", "ledger:write"],
            "token_ttl_seconds": "600",
            "_save": "Save",
        },
        HTTP_USER_AGENT=USER_AGENT,
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    changelist = "/admin/identity/machineclient/"
    rotate = {"action": "rotate_secret", "_selected_action": [made.pk]}
    response = admin_client.post(changelist, rotate, HTTP_USER_AGENT=USER_AGENT)
    assert response.status_code == 200
    revoke = {"action": "revoke", "_selected_action": [made.pk]}
    assert admin_client.post(changelist, revoke, HTTP_USER_AGENT=USER_AGENT).status_code == 302

    # then each step is audited as the admin's, with the request's id, address and user agent
    created, changed = one("portal.client.created"), one("portal.client.changed")
    rotated, revoked = one("portal.client.secret_rotated"), one("portal.client.revoked")
    for event in (created, changed, rotated, revoked, one("portal.admin.addition"), one("portal.admin.change")):
        assert event["actor"]["display"] == "root", event
        assert event["object"]["id"] == made.pk
        assert_from_http(event)
    assert changed["changes"] == {"allowed_scopes": [["ledger:read"], ["ledger:read", "ledger:write"]]}
    assert created["metadata"]["created_by"] == "root"

    # and no event holds the secret or its hash
    made.refresh_from_db()
    assert made.secret_hash not in json.dumps(events())


# -------------------------------------------------------------------------------------------- tokens


def _token_request(client: Client, body: dict, **extra: str):
    return client.post(
        TOKEN_URL, json.dumps(body), content_type="application/json", HTTP_USER_AGENT=USER_AGENT, **extra
    )


def test_an_issued_token_is_audited_cheaply(client):
    made = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    OutboxEvent.objects.all().delete()

    response = _token_request(client, made.token_request("ledger"))

    assert response.status_code == 200
    issued = one("auth.token.issued")
    assert issued["outcome"] == "success"
    assert issued["actor"] == {"type": "client", "id": made.id, "display": made.id}
    assert issued["metadata"] == {"audience": "ledger", "scope": "ledger:read"}
    assert_from_http(issued)
    assert made.secret not in json.dumps(issued)
    assert response.json()["access_token"] not in json.dumps(issued)


@pytest.mark.parametrize(
    ("change", "code", "status"),
    [
        ({"client_secret": "not-the-secret"}, "invalid_client", 401),
        ({"scope": "ledger:write"}, "scope_not_allowed", 403),
        ({"audience": "payments"}, "audience_not_allowed", 403),
        ({"grant_type": "password"}, "unsupported_grant_type", 400),
        ({"client_secret": None}, "invalid_client", 401),
        ({"audience": None}, "invalid_request", 400),  # answered as validation_error
        ({"unexpected": "field"}, "invalid_request", 400),
    ],
)
def test_a_refused_token_request_is_audited_as_the_claimed_client(client, change, code, status):
    # given a client allowed ledger:read only
    made = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    OutboxEvent.objects.all().delete()

    # when a token request is refused
    body = {k: v for k, v in {**made.token_request("ledger"), **change}.items() if v is not None}
    response = _token_request(client, body)
    assert response.status_code == status, response.content
    assert response.json()["code"] == (code if code != "invalid_request" else "validation_error")

    # then one failure event names the refusal, the client id given, and the request
    failed = one("auth.token.failed")
    assert failed["outcome"] == "failure"
    assert failed["actor"] == {"type": "client", "id": made.id, "display": made.id}
    assert failed["metadata"]["code"] == code
    assert failed["metadata"]["client_id"] == made.id
    assert_from_http(failed)
    assert made.secret not in json.dumps(failed)
    assert "not-the-secret" not in json.dumps(failed)
    assert not events("auth.token.issued")


def test_a_refusal_without_a_client_id_names_an_unknown_client(client):
    response = _token_request(client, {"grant_type": "client_credentials", "audience": "ledger"})

    assert response.status_code == 401
    failed = one("auth.token.failed")
    assert failed["actor"] == {"type": "client", "id": "", "display": "unknown"}
    assert failed["metadata"] == {"code": "invalid_client"}


def test_refusals_of_malformed_requests_are_audited(client):
    made = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    OutboxEvent.objects.all().delete()

    # an unparsable body, and a secret sent both as Basic credentials and in the body
    client.post(TOKEN_URL, "{not json", content_type="application/json", HTTP_USER_AGENT=USER_AGENT)
    client.post(
        TOKEN_URL,
        urlencode(made.token_request("ledger")),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION="Basic bm90OmJhc2lj",  # "not:basic"
        HTTP_USER_AGENT=USER_AGENT,
    )
    # malformed Basic credentials
    client.post(
        TOKEN_URL,
        urlencode({"grant_type": "client_credentials", "audience": "ledger"}),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION="Basic %%%",
        HTTP_USER_AGENT=USER_AGENT,
    )

    codes = [(e["metadata"]["code"], e["actor"]["id"]) for e in events("auth.token.failed")]
    assert codes == [("invalid_request", ""), ("invalid_request", "not"), ("invalid_client", "")]
    everything = json.dumps(events())
    assert made.secret not in everything
    assert "basic" not in everything


def test_the_token_service_audits_its_refusals():
    made = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    issue = dict(grant_type="client_credentials", client_id=made.client.id, audience="ledger")
    OutboxEvent.objects.all().delete()

    identity.token_issue(**issue, client_secret=made.secret)
    with pytest.raises(InvalidClient):
        identity.token_issue(**issue, client_secret="not-the-secret")
    with pytest.raises(ScopeNotAllowed):
        identity.token_issue(**issue, client_secret=made.secret, scope="ledger:write")

    assert one("auth.token.issued")["actor"]["id"] == made.client.id
    failures = events("auth.token.failed")
    assert [f["metadata"]["code"] for f in failures] == ["invalid_client", "scope_not_allowed"]
    assert {f["outcome"] for f in failures} == {"failure"}
    assert "not-the-secret" not in json.dumps(failures)


@pytest.mark.django_db(transaction=True)
def test_a_refusal_is_committed_even_when_the_request_would_roll_back(client, monkeypatch):
    # given requests run in one transaction each, and a refusal marks it for rollback (DRF's default handler)
    from rest_framework.views import set_rollback

    made = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    OutboxEvent.objects.all().delete()
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    handler = TokenView.get_exception_handler

    def rolling_back(self):
        def handle(exc, context):
            response = handler(self)(exc, context)
            set_rollback()
            return response

        return handle

    monkeypatch.setattr(TokenView, "get_exception_handler", rolling_back)

    # when a token request is refused
    response = _token_request(client, {**made.token_request("ledger"), "client_secret": "not-the-secret"})

    # then its audit event was committed all the same
    assert response.status_code == 401
    assert [e["metadata"]["code"] for e in events("auth.token.failed")] == ["invalid_client"]
