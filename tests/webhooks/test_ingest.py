"""Events in: relayed domain events become messages (idempotent on the event id), fanned out to the enabled
endpoints whose event-type patterns and channels match, with the dispatchers woken in the same transaction; a
poisoned event never stops the others; ``POST /api/v1/messages``' service checks the catalog and the schema."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import connection

from services.kit.models import OutboxEvent
from services.kit.outbox import isoformat
from services.webhooks.errors import IngestEventsFailed, InvalidPayload, UnknownEventType
from services.webhooks.models import Delivery, Endpoint, EventType, Message
from services.webhooks.services import messages_create, messages_ingest
from workers.webhooks import ingest as ingest_task

pytestmark = pytest.mark.django_db

A, B, C = "acc_a", "acc_b", "acc_c"


def payment_event(
    event_type: str = "payment.settled", *, source: str = A, destination: str = B, **fields: Any
) -> dict[str, Any]:
    """An event as payments' outbox relays it (expanded: ``id``, ``service``, ``service_seq`` added)."""
    data = copy.deepcopy(EventType.objects.get(name=event_type).example)
    data.update(id=f"pay_{uuid.uuid4().hex[:26]}", source_account=source, destination_account=destination)
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "service": "payments",
        "service_seq": 1,
        "type": event_type,
        "occurred_at": "2026-12-05T09:30:00.250000Z",
        "data": data,
        "channels": [source, destination],
        "request_id": f"req_{uuid.uuid4().hex[:12]}",
        **fields,
    }


def ledger_event(event_type: str = "ledger.transaction.posted", accounts: tuple[str, ...] = (A, B)) -> dict[str, Any]:
    data = copy.deepcopy(EventType.objects.get(name=event_type).example)
    data["id"] = f"txn_{uuid.uuid4().hex[:26]}"
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "service": "ledger",
        "service_seq": 7,
        "type": event_type,
        "occurred_at": "2026-12-05T09:30:01Z",
        "data": data,
        "channels": list(accounts),
        "request_id": "req_ledger1",
    }


def relayed(event: dict[str, Any]) -> list[Any]:
    """The same event as the relay publishes it: ``[id, service, service_seq, payload text]``."""
    payload = {k: v for k, v in event.items() if k not in ("id", "service", "service_seq")}
    return [event["id"], event["service"], event["service_seq"], json.dumps(payload)]


def delivered_to(endpoint: Endpoint) -> set[str]:
    return set(Delivery.objects.filter(endpoint=endpoint).values_list("message__event_id", flat=True))


def test_an_event_becomes_one_message_with_its_exact_body(endpoint_make: Callable[..., Endpoint]) -> None:
    endpoint = endpoint_make(event_types=["*"])
    event = payment_event()

    result = messages_ingest([relayed(event)])

    assert len(result.created) == 1
    assert result.deliveries == 1
    message = Message.objects.get(event_id=event["id"])
    assert message.id == result.created[0]
    assert message.id.startswith("msg_")
    assert json.loads(message.body) == {
        "type": "payment.settled",
        "timestamp": event["occurred_at"],
        "data": event["data"],
    }
    assert message.body == json.dumps(json.loads(message.body), separators=(",", ":"), ensure_ascii=False)
    assert isoformat(message.occurred_at) == event["occurred_at"]
    assert message.payload == event["data"]
    assert (message.type, message.source, message.request_id) == ("payment.settled", "payments", event["request_id"])
    assert message.object_id == event["data"]["id"]
    assert message.channels == [A, B]
    delivery = Delivery.objects.get(message=message)
    assert (delivery.endpoint_id, delivery.state, delivery.attempts, delivery.msg_seq) == (
        endpoint.id,
        "pending",
        0,
        message.seq,
    )


def test_a_redelivered_event_creates_nothing(endpoint_make: Callable[..., Endpoint]) -> None:
    endpoint_make(event_types=["*"])
    events = [payment_event() for _ in range(3)]
    first = messages_ingest([relayed(e) for e in events])

    again = messages_ingest([relayed(e) for e in events] + [events[0]])  # the relay's batch again, and a repeat

    assert len(first.created) == 3
    assert again.created == []
    assert again.duplicates == 4
    assert Message.objects.count() == 3
    assert Delivery.objects.count() == 3


def test_messages_are_numbered_in_the_batch_order(endpoint_make: Callable[..., Endpoint]) -> None:
    events = [payment_event() for _ in range(20)]

    result = messages_ingest(events)

    seqs = [Message.objects.get(event_id=e["id"]).seq for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 20
    assert [Message.objects.get(event_id=e["id"]).id for e in events] == result.created


def test_fan_out_by_event_type_pattern(endpoint_make: Callable[..., Endpoint]) -> None:
    everything = endpoint_make(event_types=["*"])
    payments = endpoint_make(event_types=["payment.*"])
    settled = endpoint_make(event_types=["payment.settled", "payment.failed"])
    ledger = endpoint_make(event_types=["ledger.*"])
    transactions = endpoint_make(event_types=["ledger.transaction.*"])
    voided = endpoint_make(event_types=["ledger.transaction.voided"])
    lookalike = endpoint_make(event_types=["payment.settled.*", "pay.*"])
    settled_event, created_event = payment_event("payment.settled"), payment_event("payment.created")
    posted = ledger_event("ledger.transaction.posted")

    result = messages_ingest([settled_event, created_event, posted])

    assert result.deliveries == 3 + 2 + 1 + 1 + 1 + 0 + 0
    assert delivered_to(everything) == {settled_event["id"], created_event["id"], posted["id"]}
    assert delivered_to(payments) == {settled_event["id"], created_event["id"]}
    assert delivered_to(settled) == {settled_event["id"]}
    assert delivered_to(ledger) == {posted["id"]}
    assert delivered_to(transactions) == {posted["id"]}
    assert delivered_to(voided) == set()
    assert delivered_to(lookalike) == set()


def test_fan_out_by_channel_and_only_to_enabled_endpoints(endpoint_make: Callable[..., Endpoint]) -> None:
    merchant_a = endpoint_make(event_types=["payment.*"], channels=[A])
    merchant_c = endpoint_make(event_types=["payment.*"], channels=[C, "acc_other"])
    all_channels = endpoint_make(event_types=["payment.*"], channels=[])
    disabled = endpoint_make(event_types=["*"], enabled=False, disabled_reason="manual")
    a_to_b, b_to_c, no_channel = payment_event(), payment_event(source=B, destination=C), payment_event(channels=[])

    messages_ingest([a_to_b, b_to_c, no_channel])

    assert delivered_to(merchant_a) == {a_to_b["id"]}
    assert delivered_to(merchant_c) == {b_to_c["id"]}
    assert delivered_to(all_channels) == {a_to_b["id"], b_to_c["id"], no_channel["id"]}
    assert delivered_to(disabled) == set()


def test_a_poisoned_event_is_isolated_and_the_others_go_in(endpoint_make: Callable[..., Endpoint]) -> None:
    endpoint_make(event_types=["*"])
    good = [payment_event() for _ in range(9)]
    poisoned = payment_event()
    poisoned["data"]["description"] = "nul \x00 byte"  # valid JSON, refused by PostgreSQL's jsonb
    unknown = payment_event(type="payment.screening")
    malformed = [{"no": "id"}, payment_event(occurred_at="yesterday"), payment_event(channels="acc_a"), "text", None]
    items = [*good[:4], poisoned, unknown, *malformed, *good[4:]]

    result = messages_ingest(items)

    assert len(result.created) == 9
    assert result.failed == 1
    assert result.dropped == 1 + len(malformed)
    assert set(Message.objects.values_list("event_id", flat=True)) == {e["id"] for e in good}
    assert Delivery.objects.count() == 9
    # once the poisoned event is gone, the same batch again creates nothing (and drops the same)
    again = messages_ingest(items)
    assert (again.created, again.duplicates, again.failed) == ([], 9, 1)


def test_the_task_ingests_a_relayed_batch(endpoint_make: Callable[..., Endpoint]) -> None:
    endpoint_make(event_types=["payment.*"])
    events = [payment_event(), payment_event("payment.failed"), payment_event(type="payment.processing")]

    outcome = ingest_task.apply(args=[[relayed(e) for e in events]]).get()

    assert outcome == {"created": 2, "deliveries": 2, "duplicates": 0, "dropped": 1, "failed": 0}
    assert set(Message.objects.values_list("request_id", flat=True)) == {
        events[0]["request_id"],
        events[1]["request_id"],
    }


def test_the_task_fails_visibly_when_an_event_was_poisoned(endpoint_make: Callable[..., Endpoint]) -> None:
    endpoint_make(event_types=["*"])
    good, poisoned = payment_event(), payment_event()
    poisoned["data"]["description"] = "\x00"

    outcome = ingest_task.apply(args=[[relayed(good), relayed(poisoned)]])

    assert isinstance(outcome.result, IngestEventsFailed)
    assert "1 event(s) failed and were dropped, 1 message(s) created" in str(outcome.result)
    assert poisoned["id"] in str(outcome.result)
    assert list(Message.objects.values_list("event_id", flat=True)) == [good["id"]]


@pytest.mark.django_db(transaction=True)
def test_the_dispatchers_are_woken_when_deliveries_commit(endpoint_make: Callable[..., Endpoint]) -> None:
    params = connection.get_connection_params()
    listener = psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        **{k: v for k, v in params.items() if k in ("host", "port", "user", "password")},
        autocommit=True,
    )
    try:
        listener.execute("LISTEN webhooks_due")
        messages_ingest([payment_event()])  # no endpoint: no delivery, no wake-up
        assert list(listener.notifies(timeout=0.3)) == []
        endpoint_make(event_types=["*"])
        messages_ingest([payment_event()])
        assert [n.channel for n in listener.notifies(timeout=2, stop_after=1)] == ["webhooks_due"]
    finally:
        listener.close()


def test_messages_create_fans_out_and_is_audited(settings: Any, endpoint_make: Callable[..., Endpoint]) -> None:
    settings.ATRIUM_OUTBOX_RELAY = "off"
    endpoint = endpoint_make(event_types=["payment.*"], channels=[A])
    data = copy.deepcopy(EventType.objects.get(name="payment.created").example)
    data["id"] = "pay_own"

    message, created = messages_create(
        type="payment.created", data=data, channels=[A, A], source="cli_merchant", event_id="order-1"
    )
    again, created_again = messages_create(
        type="payment.created", data=data, channels=[A], source="cli_merchant", event_id="order-1"
    )

    assert created
    assert not created_again
    assert again.id == message.id
    assert (message.event_id, message.source, message.object_id, message.channels) == (
        "order-1",
        "cli_merchant",
        "pay_own",
        [A],
    )
    assert json.loads(message.body)["data"] == data
    assert delivered_to(endpoint) == {"order-1"}
    audits = [e.payload for e in OutboxEvent.objects.filter(topic="audit")]
    assert [(a["action"], a["object"]["id"]) for a in audits] == [("webhooks.message.created", message.id)]
    # without an event id, the message's own id is its event id
    alone, _ = messages_create(type="payment.created", data=data, source="cli_merchant")
    assert alone.event_id == alone.id


def test_messages_create_refuses_unknown_and_archived_types_and_invalid_data() -> None:
    data = copy.deepcopy(EventType.objects.get(name="payment.settled").example)
    with pytest.raises(UnknownEventType):
        messages_create(type="payment.exploded", data=data, source="cli")
    EventType.objects.filter(name="payment.canceled").update(archived=True)
    with pytest.raises(UnknownEventType):
        messages_create(type="payment.canceled", data={**data, "status": "canceled"}, source="cli")

    bad = {**data, "amount": "12.50", "status": "failed"}
    del bad["currency"]
    with pytest.raises(InvalidPayload) as refused:
        messages_create(type="payment.settled", data=bad, source="cli")
    errors = refused.value.extra["errors"]
    assert {e["pointer"] for e in errors} == {"#/data", "#/data/amount", "#/data/status"}
    assert all(e["code"].startswith("schema_") for e in errors)
    assert Message.objects.count() == 0
