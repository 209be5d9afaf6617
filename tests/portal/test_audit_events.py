"""People and machine clients in the portal are audited: logins, logouts, user/role changes, clients, tokens."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from portal.identity import services as identity
from portal.identity.errors import InvalidClient, ScopeNotAllowed
from services.kit.models import OutboxEvent
from tests.portal.factories import machine_client, superuser

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _relay_off(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"


def events(action: str) -> list[dict]:
    return [e.payload for e in OutboxEvent.objects.order_by("created_at", "id") if e.payload["action"] == action]


def test_logins_failed_logins_and_logouts(client):
    user = get_user_model().objects.create_user("dana", password=PASSWORD, is_staff=True)
    OutboxEvent.objects.all().delete()

    client.post("/admin/login/", {"username": "dana", "password": "wrong password"}, HTTP_USER_AGENT="pytest-ua")
    client.post("/admin/login/", {"username": "dana", "password": PASSWORD})
    client.post("/admin/logout/")

    (failed,) = events("auth.login.failed")
    (succeeded,) = events("auth.login.succeeded")
    (logout,) = events("auth.logout")
    assert failed["outcome"] == "failure"
    assert failed["actor"]["display"] == "dana"
    assert failed["user_agent"] == "pytest-ua"
    assert failed["source_ip"] == "127.0.0.1"
    assert failed["request_id"]
    assert "wrong password" not in json.dumps(failed)
    assert succeeded["actor"] == {"type": "user", "id": str(user.pk), "display": "dana"}
    assert logout["object"] == {"type": "user", "id": str(user.pk)}
    assert not events("portal.user.changed")  # last_login is not a change


def test_user_group_and_permission_changes(client):
    client.force_login(superuser(username="root"))
    OutboxEvent.objects.all().delete()
    user = get_user_model().objects.create_user("erin", password=PASSWORD)
    user.set_password("another long password")
    user.is_staff = True
    user.save()
    group = Group.objects.create(name="reviewers")
    user.groups.add(group)
    group.permissions.add(Permission.objects.get(codename="view_machineclient"))

    created = events("portal.user.created")[0]
    changed = events("portal.user.changed")[0]
    assert created["changes"]["username"] == [None, "erin"]
    assert created["changes"]["password"] == [None, "[redacted]"]
    assert changed["changes"]["is_staff"] == [False, True]
    assert changed["changes"]["password"] == ["[redacted]", "[redacted]"]
    assert events("portal.user.groups_changed")[0]["metadata"] == {"added": ["reviewers"]}
    assert events("portal.group.permissions_changed")[0]["metadata"] == {"added": ["identity.view_machineclient"]}


def test_client_lifecycle_and_the_rotation_event_holds_no_secret():
    made = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    new_secret = identity.client_rotate_secret(client=made.client)
    identity.client_revoke(client=made.client)

    (created,) = events("portal.client.created")
    (rotated,) = events("portal.client.secret_rotated")
    (revoked,) = events("portal.client.revoked")
    assert created["metadata"]["scopes"] == ["ledger:read"]
    everything = json.dumps([e.payload for e in OutboxEvent.objects.all()])
    for secret in (made.secret, new_secret, identity.secret_hash(new_secret), identity.secret_hash(made.secret)):
        assert secret not in everything
    assert rotated["object"] == {"type": "machine_client", "id": made.client.id}
    assert revoked["changes"] == {"is_active": [True, False]}


def test_token_issuance_and_its_refusals_are_audited():
    made = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    issue = dict(grant_type="client_credentials", client_id=made.client.id, audience="ledger")

    identity.token_issue(**issue, client_secret=made.secret)
    with pytest.raises(InvalidClient):
        identity.token_issue(**issue, client_secret="not-the-secret")
    with pytest.raises(ScopeNotAllowed):
        identity.token_issue(**issue, client_secret=made.secret, scope="ledger:write")

    (issued,) = events("auth.token.issued")
    failures = events("auth.token.failed")
    assert issued["actor"]["id"] == made.client.id
    assert [f["metadata"]["code"] for f in failures] == ["invalid_client", "scope_not_allowed"]
    assert {f["outcome"] for f in failures} == {"failure"}
    assert "not-the-secret" not in json.dumps(failures)


def test_admin_changes_are_audited(client):
    client.force_login(superuser(username="admin-user"))
    made = machine_client()
    OutboxEvent.objects.all().delete()

    response = client.post("/admin/auth/group/add/", {"name": "via-admin", "permissions": []}, follow=False)

    assert response.status_code == 302
    (added,) = events("portal.admin.addition")
    assert added["object"]["type"] == "auth.group"
    assert added["actor"]["display"] == "admin-user"
    assert made.client.id  # a client exists alongside; nothing else recorded an admin change
