"""The webhooks worker: a real ``celery -A workers worker -Q webhooks`` process with the webhooks settings takes
``webhooks.ingest`` batches sent by name (as the outbox relays send them) and makes messages and deliveries;
a batch it has seen changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from celery import current_app

from services.webhooks.models import Delivery, Endpoint, Message
from tests.harness import ProcessHarness, current_test_database_url, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _relayed(seq: int, event_type: str = "payment.created") -> list[Any]:
    payload = {
        "type": event_type,
        "occurred_at": "2026-12-05T09:30:00.000000Z",
        "data": {"id": f"pay_{uuid.uuid4().hex[:26]}", "status": event_type.split(".")[1]},
        "channels": ["acc_a", "acc_b"],
        "request_id": f"req_{uuid.uuid4().hex[:12]}",
    }
    return [f"evt_{uuid.uuid4().hex}", "payments", seq, json.dumps(payload)]


def test_the_worker_ingests_relayed_batches_once(
    harness: ProcessHarness, endpoint_make: Callable[..., Endpoint]
) -> None:
    endpoint = endpoint_make(event_types=["payment.*"], channels=["acc_a"])
    harness.worker("webhooks", database_url=current_test_database_url(), env={"ATRIUM_OUTBOX_RELAY": "off"})
    batch = [_relayed(seq) for seq in range(1, 6)]

    current_app.send_task("webhooks.ingest", args=[batch])
    wait_until(lambda: Message.objects.count() == 5, 30, "five messages")

    # the same batch again (a redelivery), then one new event: once that is in, the repeat was handled before it
    current_app.send_task("webhooks.ingest", args=[batch])
    later = _relayed(6, "payment.settled")
    current_app.send_task("webhooks.ingest", args=[[later]])
    wait_until(lambda: Message.objects.filter(event_id=later[0]).exists(), 30, "the later event")

    assert Message.objects.count() == 6
    assert Delivery.objects.filter(endpoint=endpoint).count() == 6
    assert {m.source for m in Message.objects.all()} == {"payments"}
