"""A change in a service's admin (here the ledger's) becomes an audit event of that service.

Runs under the ledger's settings: the kit connects the receiver in every service, so the action is
``ledger.admin.<addition|change|deletion>``, written in the same transaction as the admin's change.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import Client

from services.kit.models import OutboxEvent
from services.ledger.models import Account

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough password"
USER_AGENT = "pytest-admin/1.0"


@pytest.fixture(autouse=True)
def _relay_off(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"


@pytest.fixture
def ops():
    return get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)


@pytest.fixture
def admin_client(client: Client, ops) -> Client:
    """A superuser logged in through the ledger admin's own login form."""
    response = client.post("/admin/login/", {"username": "ops", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302, response.content.decode()[:2000]
    OutboxEvent.objects.all().delete()
    return client


def events(action: str | None = None) -> list[dict]:
    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    return [r.payload for r in rows if action is None or r.payload["action"] == action]


def test_a_ledger_admin_change_is_audited(ops):
    account = Account.objects.create(name="before", currency="EUR", normal_balance="credit")
    account.name = "after"
    account.save()

    # when the admin records a change, as ModelAdmin.log_change does (the ledger's admin is read-only)
    LogEntry.objects.log_actions(
        ops.pk, [account], CHANGE, change_message=[{"changed": {"fields": ["name"]}}], single_object=True
    )

    # then the ledger emitted an audit event naming the model, the object and the admin user
    (event,) = events("ledger.admin.change")
    assert event["outcome"] == "success"
    assert event["object"] == {"type": "ledger.account", "id": account.pk}
    assert event["actor"] == {"type": "user", "id": str(ops.pk), "display": "ops"}
    assert event["metadata"]["change_message"] == "Changed name."
    assert event["metadata"]["admin_user"] == "ops"
    assert event["metadata"]["object_repr"] == str(account)


def test_adding_changing_and_deleting_in_the_ledger_admin_are_audited_with_the_request(admin_client, ops):
    # when the superuser adds a group, renames it, then deletes it, through the ledger's admin pages
    response = admin_client.post("/admin/auth/group/add/", {"name": "ledger-ops"}, HTTP_USER_AGENT=USER_AGENT)
    assert response.status_code == 302, response.content.decode()[:2000]
    group = Group.objects.get(name="ledger-ops")
    change = f"/admin/auth/group/{group.pk}/change/"
    assert admin_client.post(change, {"name": "ledger-admins"}, HTTP_USER_AGENT=USER_AGENT).status_code == 302
    delete = f"/admin/auth/group/{group.pk}/delete/"
    assert admin_client.post(delete, {"post": "yes"}, HTTP_USER_AGENT=USER_AGENT).status_code == 302

    # then each is one event of the ledger, naming the admin user and the request it came from
    assert [e["action"] for e in events()] == ["ledger.admin.addition", "ledger.admin.change", "ledger.admin.deletion"]
    for event in events():
        assert event["object"] == {"type": "auth.group", "id": str(group.pk)}
        assert event["actor"] == {"type": "user", "id": str(ops.pk), "display": "ops"}
        assert event["metadata"]["admin_user"] == "ops"
        assert event["request_id"]
        assert event["source_ip"] == "127.0.0.1"
        assert event["user_agent"] == USER_AGENT
    assert events("ledger.admin.change")[0]["metadata"]["change_message"] == "Changed Name."
    assert events("ledger.admin.deletion")[0]["metadata"]["object_repr"] == "ledger-admins"
    assert PASSWORD not in json.dumps(events())


def test_deleting_several_objects_at_once_audits_each(admin_client):
    # given three groups
    groups = [Group.objects.create(name=f"team-{n}") for n in range(3)]
    OutboxEvent.objects.all().delete()

    # when the admin's "delete selected" action removes them (its log entries are bulk-created: no post_save)
    response = admin_client.post(
        "/admin/auth/group/",
        {"action": "delete_selected", "_selected_action": [str(g.pk) for g in groups], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Group.objects.filter(pk__in=[g.pk for g in groups]).exists()

    # then each deletion is an event, once
    deletions = events("ledger.admin.deletion")
    assert sorted(e["object"]["id"] for e in deletions) == sorted(str(g.pk) for g in groups)
    assert {e["object"]["type"] for e in deletions} == {"auth.group"}
    assert len(events()) == 3


def test_an_admin_change_rolled_back_leaves_no_event(ops):
    account = Account.objects.create(name="kept", currency="EUR", normal_balance="credit")
    OutboxEvent.objects.all().delete()

    def change_then_fail() -> None:
        with transaction.atomic():
            LogEntry.objects.log_actions(ops.pk, [account], CHANGE, change_message="renamed", single_object=True)
            raise RuntimeError("the change failed")

    # when the transaction holding the admin's change fails after it was logged
    with pytest.raises(RuntimeError):
        change_then_fail()

    # then its audit event went with it
    assert not events()
    assert not LogEntry.objects.exists()
