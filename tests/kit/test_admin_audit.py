"""A change in a service's admin (here the ledger's) becomes an audit event of that service."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model

from services.kit.models import OutboxEvent
from services.ledger.models import Account

pytestmark = pytest.mark.django_db


def test_a_ledger_admin_change_is_audited(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"
    admin = get_user_model().objects.create_superuser("ops", "ops@example.com", "a long enough password")
    account = Account.objects.create(name="before", currency="EUR", normal_balance="credit")

    # when the admin records a change, as ModelAdmin.log_change does
    LogEntry.objects.log_actions(
        admin.pk, [account], CHANGE, change_message=[{"changed": {"fields": ["name"]}}], single_object=True
    )

    # then the ledger emitted an audit event naming the model, the object and the admin user
    (event,) = [e.payload for e in OutboxEvent.objects.all() if e.payload["action"] == "ledger.admin.change"]
    assert event["object"] == {"type": "ledger.account", "id": account.pk}
    assert event["actor"] == {"type": "user", "id": str(admin.pk), "display": "ops"}
    assert event["metadata"]["change_message"] == "Changed name."
