"""The kit's COPY writer of outbox rows (for writers already on a COPY path, such as the ledger's large batches)
writes the same rows as its INSERT writers, and the relay delivers them alike."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from services.kit.models import OutboxEvent
from services.kit.outbox import event_expand, outbox_copy, outbox_put_many, relay_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_relay_thread(settings):
    """These tests drive the relay themselves."""
    settings.ATRIUM_OUTBOX_RELAY = "off"


def _copy(events: list[tuple[str, dict]]) -> list[str]:
    with transaction.atomic():
        connection.ensure_connection()
        return outbox_copy(connection.connection.cursor(), events)


def test_copied_events_are_the_rows_the_insert_writes_and_are_relayed_in_order():
    # given two events written with the array INSERT, then three with COPY (one with text COPY escapes)
    with transaction.atomic():
        inserted = outbox_put_many([("audit", {"n": 0}), ("audit", {"n": 1})])
    copied = _copy([("audit", {"n": 2}), ("audit", {"n": 3, "text": "tab\there\nnewline \\ é"}), ("audit", {"n": 4})])

    # then every row has the same shape, whichever writer wrote it
    rows = {e.id: e for e in OutboxEvent.objects.all()}
    assert set(rows) == set(inserted + copied)
    assert {(e.topic, e.attempts, e.last_error, e.seq) for e in rows.values()} == {("audit", 0, "", None)}
    assert rows[copied[1]].payload == {"n": 3, "text": "tab\there\nnewline \\ é"}

    # and the relay publishes all five once, numbered 1 to 5
    published: list[dict] = []
    relay_run(publish=lambda _task, events: published.extend(event_expand(e) for e in events))
    assert sorted(e["n"] for e in published) == [0, 1, 2, 3, 4]
    assert sorted(e["id"] for e in published) == sorted(inserted + copied)
    assert [e["service_seq"] for e in published] == [1, 2, 3, 4, 5]


def test_an_unknown_topic_is_refused_before_anything_is_written():
    with pytest.raises(ValueError, match="unknown outbox topic 'nope'"):
        _copy([("audit", {"n": 1}), ("nope", {"n": 2})])
    assert not OutboxEvent.objects.exists()


def test_no_events_write_nothing():
    assert _copy([]) == []
    assert not OutboxEvent.objects.exists()
