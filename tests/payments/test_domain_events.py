"""The payments' domain events for the webhooks service: exactly the five public types (created, settled,
failed, rejected, canceled; never the internal screening and processing), each in the contract's shape (the
payment as the API returns it; channels = its two accounts; its request id, the batch job's id beside it),
written with the change on every path (creation, the drain's batches, cancel, the repair of a broken row), and
relayed to ``webhooks.ingest`` on the ``webhooks`` queue. The retired ``payments.domain_event`` task forwards
what a relay published to it before the switch."""

from __future__ import annotations

import base64
import functools
import importlib
import json
from typing import Any

import jsonschema
import pytest
import redis

from services.kit.context import request_id_var, task_id_var
from services.kit.models import OutboxEvent
from services.kit.outbox import event_expand, relay_run
from services.payments import processing, services
from services.payments.models import BlockedAccount, Payment
from tests.payments.conftest import LedgerAdmin, PaymentsAPI
from tests.payments.test_processing import create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("payments_env")]

KEYS = {"type", "occurred_at", "data", "channels", "request_id"}


@functools.cache
def catalog_validator(event_type: str) -> jsonschema.Draft202012Validator:
    """The JSON Schema the webhooks service's catalog seeds for ``event_type`` (its data migration)."""
    seeded = importlib.import_module("services.webhooks.migrations.0002_event_types")
    schema = {name: schema for name, _, schema, _ in seeded.event_types()}[event_type]
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


PUBLIC = {"payment.created", "payment.settled", "payment.failed", "payment.rejected", "payment.canceled"}


def domain(payment_id: str) -> list[dict[str, Any]]:
    rows = OutboxEvent.objects.filter(topic="events", payload__data__id=payment_id).order_by("created_at", "id")
    return [row.payload for row in rows]


def assert_shape(event: dict[str, Any], api: PaymentsAPI, request_id: str) -> None:
    """The contract's keys; data is the payment as ``GET /payments/{id}`` answered at that step."""
    assert set(event) - {"task_id"} == KEYS
    # and valid against the webhooks catalog's schema of its type (what POST /api/v1/messages checks)
    catalog_validator(event["type"]).validate(event["data"])
    data = event["data"]
    assert event["type"] == f"payment.{data['status']}"
    assert event["type"] in PUBLIC
    assert event["channels"] == [data["source_account"], data["destination_account"]]
    assert event["occurred_at"] == data["updated_at"]
    assert event["request_id"] == request_id
    now = api.get(f"payments/{data['id']}").json()
    if now["status"] == data["status"]:  # the last step: the event is what the API answers
        assert data == now


def body(source: str, destination: str) -> dict[str, Any]:
    return {"amount": 150, "currency": "EUR", "source_account": source, "destination_account": destination}


def queued(broker: redis.Redis, task: str) -> list[Any]:
    """The first argument of every ``task`` message waiting in the broker's ``webhooks`` queue."""
    out = []
    for raw in broker.lrange("webhooks", 0, -1):
        message = json.loads(raw)
        if message["headers"].get("task") == task:
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            out.append(args[0])
    return out


def test_creation_through_the_api_writes_payment_created_with_its_request_id(api: PaymentsAPI, ledger_admin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    response = api.create(
        {"amount": 150, "currency": "EUR", "source_account": source, "destination_account": destination}
    )

    assert response.status_code == 201
    (event,) = domain(response.json()["id"])
    assert event["type"] == "payment.created"
    assert event["data"] == response.json()
    assert_shape(event, api, response["X-Request-ID"])


def test_a_drain_batch_writes_only_the_public_steps_each_under_its_payment_s_request_id(
    api: PaymentsAPI, ledger_admin: LedgerAdmin
):
    rich, poor, blocked = ledger_admin.funded(100_000), ledger_admin.funded(10), ledger_admin.funded(100_000)
    destination = ledger_admin.account()
    BlockedAccount.objects.create(account=blocked)
    payments: dict[str, Payment] = {}
    for rid, account, amount in (("rid-ok", rich, 100), ("rid-poor", poor, 500), ("rid-blocked", blocked, 100)):
        token = request_id_var.set(rid)
        try:
            payments[rid] = create(account, destination, amount)
        finally:
            request_id_var.reset(token)

    tokens = request_id_var.set("req_drain_own"), task_id_var.set("task-drain-7")
    try:
        result = processing.run(processing.claim(limit=50))
    finally:
        request_id_var.reset(tokens[0])
        task_id_var.reset(tokens[1])

    assert sorted(result.statuses.values()) == ["failed", "rejected", "settled"]
    ends = {"rid-ok": "payment.settled", "rid-poor": "payment.failed", "rid-blocked": "payment.rejected"}
    for rid, payment in payments.items():
        created, end = domain(payment.id)  # no payment.screening, no payment.processing
        assert (created["type"], end["type"]) == ("payment.created", ends[rid])
        assert_shape(created, api, rid)
        assert_shape(end, api, rid)
        assert "task_id" not in created
        assert end["task_id"] == "task-drain-7"
    assert not OutboxEvent.objects.filter(topic="events", payload__type__in=["payment.screening", "payment.processing"])
    # ... while the audit trail still has every step
    audited = OutboxEvent.objects.filter(topic="audit", payload__object__id=payments["rid-ok"].id).count()
    assert audited == 4


def test_a_cancel_writes_payment_canceled_under_the_cancel_s_request(api: PaymentsAPI, ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    payment = create(source, destination, 100)

    response = api.cancel(payment.id)

    assert response.status_code == 200
    _created, canceled = domain(payment.id)
    assert canceled["type"] == "payment.canceled"
    assert canceled["data"] == response.json()
    assert_shape(canceled, api, response["X-Request-ID"])


def test_a_repaired_row_s_failure_has_the_contract_s_shape(api: PaymentsAPI, ledger_admin: LedgerAdmin):
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    token = request_id_var.set("rid-repaired")
    try:
        payment = create(source, destination, 100)
    finally:
        request_id_var.reset(token)

    assert services.payment_park_raw(
        payment_id=payment.id, failure_code="processing_error", failure_message="x", processing_errors=3
    )

    _, failed = domain(payment.id)
    assert failed["type"] == "payment.failed"
    assert_shape(failed, api, "rid-repaired")


def test_the_relay_publishes_them_to_webhooks_ingest_on_the_webhooks_queue(
    api: PaymentsAPI, ledger_admin: LedgerAdmin, settings: Any
):
    assert settings.ATRIUM_OUTBOX_TOPICS["events"] == "webhooks.ingest"
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    relay_run()
    broker.delete("webhooks")
    source, destination = ledger_admin.funded(10_000), ledger_admin.account()
    response = api.create(
        {"amount": 150, "currency": "EUR", "source_account": source, "destination_account": destination}
    )

    try:
        relay_run()
        published = [event_expand(item) for batch in queued(broker, "webhooks.ingest") for item in batch]
    finally:
        broker.delete("webhooks")

    (event,) = [e for e in published if e.get("data", {}).get("id") == response.json()["id"]]
    assert (event["type"], event["service"]) == ("payment.created", "payments")
    assert event["data"] == response.json()
    assert event["request_id"] == response["X-Request-ID"]
    assert event["channels"] == [source, destination]


def test_the_retired_consumer_forwards_what_was_published_to_it_before_the_switch(settings: Any):
    from workers.payments import domain_event

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("webhooks")
    data = {"id": "pay_1", "source_account": "acc_a", "destination_account": "acc_b", "status": "settled"}
    old = [
        ["evt_1", "payments", 1, json.dumps({"type": "payment.screening", "request_id": "r1", "data": data})],
        ["evt_2", "payments", 2, json.dumps({"type": "payment.settled", "request_id": "r1", "data": data})],
        ["evt_3", "payments", 3, "{not json"],
    ]
    try:
        assert domain_event.run(old) == 2
        (forwarded,) = queued(broker, "webhooks.ingest")
    finally:
        broker.delete("webhooks")

    settled, malformed = forwarded
    assert settled[:3] == ["evt_2", "payments", 2]
    assert json.loads(settled[3]) == {
        "type": "payment.settled",
        "request_id": "r1",
        "data": data,
        "channels": ["acc_a", "acc_b"],
    }
    assert malformed == old[2]  # the ingest isolates it
