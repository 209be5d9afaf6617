"""The kit's outbox: rows written with the change, numbered gaplessly, published at least once."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.db import connection, transaction
from django.utils import timezone

from services.kit.audit import REDACTED, audit_record
from services.kit.models import OutboxEvent
from services.kit.outbox import event_expand, outbox_purge, relay_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_relay_thread(settings):
    """These tests drive the relay themselves."""
    settings.ATRIUM_OUTBOX_RELAY = "off"


class Collector:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[str, list[dict]]] = []
        self.fail = fail

    def __call__(self, task_name: str, events: list[dict]) -> None:
        if self.fail:
            raise ConnectionError("broker away")
        self.batches.append((task_name, events))

    @property
    def events(self) -> list[dict]:
        return [event_expand(e) for _, batch in self.batches for e in batch]


def test_an_event_exists_only_if_its_transaction_commits():
    with transaction.atomic():
        audit_record("ledger.account.created", object_type="account", object_id="acc_1")

    def rolled_back() -> None:
        with transaction.atomic():
            audit_record("ledger.account.created", object_type="account", object_id="acc_2")
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back()

    assert [e.payload["object"]["id"] for e in OutboxEvent.objects.all()] == ["acc_1"]


def test_relay_numbers_gaplessly_publishes_once_and_keeps_rows_when_the_broker_is_away():
    for n in range(5):
        audit_record("ledger.transaction.created", object_type="transaction", object_id=f"txn_{n}")

    down = Collector(fail=True)
    with pytest.raises(ConnectionError):
        relay_run(publish=down)
    assert OutboxEvent.objects.unpublished().count() == 5
    assert all(e.attempts == 1 and "broker away" in e.last_error for e in OutboxEvent.objects.all())

    up = Collector()
    relay_run(publish=up)
    relay_run(publish=up)  # nothing left

    assert [e["service_seq"] for e in up.events] == [1, 2, 3, 4, 5]
    assert {e["service"] for e in up.events} == {"ledger"}
    assert {name for name, _ in up.batches} == {"audit.ingest"}
    assert len({e["id"] for e in up.events}) == 5
    assert not OutboxEvent.objects.unpublished().exists()


def test_secrets_are_redacted_before_they_are_written():
    audit_record(
        "portal.client.secret_rotated",
        object_type="client",
        object_id="cli_1",
        changes={"client_secret": ["old-value", "new-value"], "name": ["a", "b"]},
        metadata={"token": "abc", "nested": {"password": "pw", "ok": 1}},
    )
    payload = OutboxEvent.objects.get().payload
    assert payload["changes"] == {"client_secret": [REDACTED, REDACTED], "name": ["a", "b"]}
    assert payload["metadata"] == {"token": REDACTED, "nested": {"password": REDACTED, "ok": 1}}
    assert "old-value" not in str(payload)
    assert "new-value" not in str(payload)


def test_the_relay_command_delivers_to_the_real_broker():
    # given committed events (the web process does no relay work in the default "daemon" mode)
    for n in range(3):
        audit_record("ledger.account.created", object_type="account", object_id=f"acc_{n}")

    # when the service's relay process runs once
    from django.core.management import call_command

    call_command("outbox_relay", "--once")

    # then every event was published (to the Redis broker of this test run) and numbered 1..3
    assert list(OutboxEvent.objects.order_by("seq").values_list("seq", flat=True)) == [1, 2, 3]
    assert not OutboxEvent.objects.unpublished().exists()


def test_the_relay_numbers_in_batches_and_an_idle_relay_writes_nothing():
    # given seven committed events
    for n in range(7):
        audit_record("ledger.account.created", object_type="account", object_id=f"acc_{n}")

    # when the relay runs with batches of three, then once more with nothing left
    up = Collector()
    relay_run(batch=3, publish=up)
    with connection.cursor() as cursor:
        cursor.execute("SELECT xmin::text, last_seq, published_seq FROM kit_outbox_counter")
        before = cursor.fetchall()
    relay_run(publish=up)
    with connection.cursor() as cursor:
        cursor.execute("SELECT xmin::text, last_seq, published_seq FROM kit_outbox_counter")
        after = cursor.fetchall()

    # then three messages carried 1..7 gaplessly, the watermark is at 7, and the idle run wrote nothing
    assert [len(batch) for _, batch in up.batches] == [3, 3, 1]
    assert [e["service_seq"] for e in up.events] == list(range(1, 8))
    assert [row[1:] for row in before] == [(7, 7)]
    assert after == before
    assert not OutboxEvent.objects.unpublished().exists()


def test_retention_deletes_only_published_rows_past_the_retention_period_in_batches(caplog):
    # given 7 published events, 5 of them written 10 days ago, then 2 unpublished ones also 10 days old
    for n in range(7):
        audit_record("ledger.transaction.created", object_type="transaction", object_id=f"txn_{n}")
    relay_run(publish=Collector())
    for n in range(2):
        audit_record("ledger.transaction.created", object_type="transaction", object_id=f"late_{n}")
    old = timezone.now() - dt.timedelta(days=10)
    recent = {"txn_5", "txn_6"}
    for event in OutboxEvent.objects.all():
        if event.payload["object"]["id"] not in recent:
            OutboxEvent.objects.filter(pk=event.pk).update(created_at=old)

    # when retention runs with 7 days, two rows per range
    with caplog.at_level(logging.INFO, logger="services.kit.outbox"):
        removed = outbox_purge(days=7, batch=2)

    # then the 5 old published rows are gone; recent ones and unpublished ones (however old) stay
    assert removed == 5
    left = sorted(e.payload["object"]["id"] for e in OutboxEvent.objects.all())
    assert left == ["late_0", "late_1", "txn_5", "txn_6"]
    assert OutboxEvent.objects.unpublished().count() == 2
    assert any(r.getMessage() == "outbox.purged" and r.rows == 5 for r in caplog.records)
    # and the relay carries on numbering and publishing after them
    collector = Collector()
    relay_run(publish=collector)
    assert [e["service_seq"] for e in collector.events] == [8, 9]
    assert outbox_purge(days=7, batch=2) == 0


def test_retention_keeps_everything_younger_than_the_setting(settings):
    settings.ATRIUM_OUTBOX_RETENTION_DAYS = 7
    for n in range(3):
        audit_record("ledger.transaction.created", object_type="transaction", object_id=f"txn_{n}")
    relay_run(publish=Collector())

    assert outbox_purge() == 0
    assert OutboxEvent.objects.count() == 3
