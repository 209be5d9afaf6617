"""The ledger's domain events for the webhooks service: ``ledger.transaction.posted`` and ``.voided``, on every
write path (single, batch, the COPY path of large batches, post, void, settle batch, expiry), committed with the
change, in the contract's shape (the transaction as the API returns it; channels = its accounts), each carrying
its request id (a batch item's own), and relayed to ``webhooks.ingest`` on the ``webhooks`` queue.

Read from a second connection, so only committed events count (as in ``test_audit_events``).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import importlib
import json
from typing import Any

import jsonschema
import pytest
import redis
from django.db import connections
from django.utils import timezone

from services.kit.models import OutboxEvent
from services.kit.outbox import event_expand, relay_run
from services.kit.queues import route_task
from services.ledger.services import settlement
from tests.ledger.conftest import LedgerAPI

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("_relay_off")]

OUTBOX = OutboxEvent._meta.db_table
KEYS = {"type", "occurred_at", "data", "channels", "request_id"}


@functools.cache
def catalog_validator(event_type: str) -> jsonschema.Draft202012Validator:
    """The JSON Schema the webhooks service's catalog seeds for ``event_type`` (its data migration)."""
    seeded = importlib.import_module("services.webhooks.migrations.0002_event_types")
    schema = {name: schema for name, _, schema, _ in seeded.event_types()}[event_type]
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture
def _relay_off(settings: Any) -> None:
    settings.ATRIUM_OUTBOX_RELAY = "off"


def domain(event_type: str | None = None) -> list[dict[str, Any]]:
    """The committed domain events (topic ``events``), oldest first."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute(f"SELECT payload::text FROM {OUTBOX} WHERE topic = 'events' ORDER BY created_at, id")
            payloads = [json.loads(row[0]) for row in cursor.fetchall()]
    finally:
        other.close()
    return [p for p in payloads if event_type is None or p["type"] == event_type]


def clear() -> None:
    OutboxEvent.objects.all().delete()


def assert_shape(event: dict[str, Any], api: LedgerAPI, request_id: str) -> None:
    """The contract's keys only; data is the transaction exactly as ``GET /transactions/{id}`` answers now."""
    assert set(event) - {"task_id"} == KEYS
    # and valid against the webhooks catalog's schema of its type (what POST /api/v1/messages checks)
    catalog_validator(event["type"]).validate(event["data"])
    body = api.get(f"transactions/{event['data']['id']}").json()
    assert event["data"] == body
    assert event["channels"] == list(dict.fromkeys(p["account"] for p in body["postings"]))
    stamp = body["posted_at"] if event["type"] == "ledger.transaction.posted" else body["voided_at"]
    assert event["occurred_at"] == stamp
    assert event["request_id"] == request_id


def batch(world: dict[str, Any], customer: dict[str, Any], count: int, prefix: str, **extra: Any) -> list[dict]:
    return [
        {
            "reference": f"{prefix}-{n}",
            "postings": [
                {"account": world["id"], "direction": "debit", "amount": 1},
                {"account": customer["id"], "direction": "credit", "amount": 1},
            ],
            **extra,
        }
        for n in range(count)
    ]


def test_a_posted_transfer_emits_posted_with_its_body_and_request_id_a_hold_emits_nothing(
    api: LedgerAPI, funded: tuple[dict, dict]
) -> None:
    world, customer = funded
    clear()

    posted = api.transfer(customer["id"], world["id"], 7, reference="single-1")
    hold = api.transfer(customer["id"], world["id"], 9, reference="single-hold", pending=True)
    replay = api.transfer(customer["id"], world["id"], 7, reference="single-1")
    refused = api.transfer(customer["id"], world["id"], 10**9, reference="single-broke")

    assert [r.status_code for r in (posted, hold, replay, refused)] == [201, 201, 200, 409]
    (event,) = domain()  # the hold is not posted; a replay and a refusal change nothing
    assert event["type"] == "ledger.transaction.posted"
    assert event["channels"] == [customer["id"], world["id"]]
    assert_shape(event, api, posted["X-Request-ID"])


def test_post_and_void_of_holds_emit_posted_and_voided_refusals_emit_nothing(
    api: LedgerAPI, funded: tuple[dict, dict]
) -> None:
    world, customer = funded
    hold = api.transfer(customer["id"], world["id"], 10, reference="hold-1", pending=True).json()
    other = api.transfer(customer["id"], world["id"], 20, reference="hold-2", pending=True).json()
    clear()

    posted = api.post(f"transactions/{hold['id']}/post")
    voided = api.post(f"transactions/{other['id']}/void")
    again = api.post(f"transactions/{hold['id']}/void")

    assert [r.status_code for r in (posted, voided, again)] == [200, 200, 409]
    post_event, void_event = domain()
    assert (post_event["type"], post_event["data"]["id"]) == ("ledger.transaction.posted", hold["id"])
    assert (void_event["type"], void_event["data"]["id"]) == ("ledger.transaction.voided", other["id"])
    assert post_event["data"] == posted.json()
    assert void_event["data"] == voided.json()
    assert_shape(post_event, api, posted["X-Request-ID"])
    assert_shape(void_event, api, voided["X-Request-ID"])


def test_a_batch_emits_one_posted_per_created_item_under_each_items_own_request_id(
    api: LedgerAPI, funded: tuple[dict, dict]
) -> None:
    world, customer = funded
    clear()
    items = batch(world, customer, 3, "mine", request_id="acc-rid-item") + batch(world, customer, 2, "call")
    refused = {**items[0], "reference": "broke", "postings": [{**p, "amount": 10**9} for p in items[0]["postings"]]}
    refused["postings"][0]["account"], refused["postings"][1]["account"] = customer["id"], world["id"]
    held = batch(world, customer, 1, "held", pending=True)

    response = api.post("transactions/batch", {"transactions": [*items, refused, *held, items[1]]})

    assert response.status_code == 200
    results = response.json()["results"]
    created = [r["id"] for r in results[:5]]
    assert [r["status"] for r in results] == ["created"] * 5 + ["error", "created", "exists"]
    events = {e["data"]["id"]: e for e in domain()}
    assert sorted(events) == sorted(created)  # not the refused, the pending or the replayed one
    assert {e["type"] for e in events.values()} == {"ledger.transaction.posted"}
    wanted = dict(zip(created, ["acc-rid-item"] * 3 + [response["X-Request-ID"]] * 2, strict=True))
    for transaction_id, event in events.items():
        assert_shape(event, api, wanted[transaction_id])


def test_a_large_batch_writes_its_events_with_the_copy_and_commits_them_with_it(
    api: LedgerAPI, funded: tuple[dict, dict]
) -> None:
    world, customer = funded
    clear()

    response = api.post("transactions/batch", {"transactions": batch(world, customer, 300, "big", request_id="r-1")})

    assert response.status_code == 200
    ids = [r["id"] for r in response.json()["results"]]
    events = domain("ledger.transaction.posted")
    assert sorted(e["data"]["id"] for e in events) == sorted(ids)
    assert {e["request_id"] for e in events} == {"r-1"}
    assert_shape(events[-1], api, "r-1")
    assert len(domain()) == 300


def test_a_settle_batch_emits_per_item_with_its_request_id_and_nothing_for_refusals_or_repeats(
    api: LedgerAPI, funded: tuple[dict, dict]
) -> None:
    world, customer = funded
    holds = [
        api.transfer(customer["id"], world["id"], 5, reference=f"sb-{n}", pending=True).json()["id"] for n in range(4)
    ]
    clear()

    post = api.post(
        "transactions/batch/settle",
        {
            "action": "post",
            "transactions": [
                {"id": holds[0], "request_id": "pay-rid-0"},
                holds[1],
                "txn_00000000000000000000000000",
                {"id": holds[0], "request_id": "pay-rid-0"},
            ],
        },
    )
    void = api.post(
        "transactions/batch/settle",
        {"action": "void", "transactions": [{"id": holds[2], "request_id": "pay-rid-2"}, holds[0]]},
    )

    assert (post.status_code, void.status_code) == (200, 200)
    assert [r["status"] for r in post.json()["results"]] == ["posted", "posted", "error", "posted"]
    assert [r["status"] for r in void.json()["results"]] == ["voided", "error"]
    posted = sorted(domain("ledger.transaction.posted"), key=lambda e: holds.index(e["data"]["id"]))
    first, second, third = *posted, *domain("ledger.transaction.voided")
    assert [(e["type"], e["data"]["id"]) for e in (first, second, third)] == [
        ("ledger.transaction.posted", holds[0]),
        ("ledger.transaction.posted", holds[1]),
        ("ledger.transaction.voided", holds[2]),
    ]
    assert_shape(first, api, "pay-rid-0")
    assert_shape(second, api, post["X-Request-ID"])
    assert_shape(third, api, "pay-rid-2")


def test_expiry_emits_voided_with_the_jobs_task_id(api: LedgerAPI, funded: tuple[dict, dict]) -> None:
    from services.kit.context import request_id_var, task_id_var

    world, customer = funded
    soon = (timezone.now() + dt.timedelta(seconds=1)).isoformat()
    holds = [
        api.transfer(customer["id"], world["id"], 5, reference=f"exp-{n}", pending=True, expires_at=soon).json()
        for n in range(2)
    ]
    clear()
    tokens = request_id_var.set("req-expire-job"), task_id_var.set("task-expire-1")
    try:
        assert settlement.transactions_expire(now=timezone.now() + dt.timedelta(minutes=1)) == 2
    finally:
        request_id_var.reset(tokens[0])
        task_id_var.reset(tokens[1])

    events = domain()
    assert sorted(e["data"]["id"] for e in events) == sorted(h["id"] for h in holds)
    for event in events:
        assert event["type"] == "ledger.transaction.voided"
        assert event["task_id"] == "task-expire-1"
        assert_shape(event, api, "req-expire-job")


def test_the_relay_publishes_them_to_webhooks_ingest_on_the_webhooks_queue(
    api: LedgerAPI, funded: tuple[dict, dict], settings: Any
) -> None:
    world, customer = funded
    assert settings.ATRIUM_OUTBOX_TOPICS["events"] == "webhooks.ingest"
    assert route_task("webhooks.ingest", [], {}, {}) == {"queue": "webhooks", "routing_key": "webhooks"}
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("webhooks")
    relay_run()  # what the fixtures wrote
    broker.delete("webhooks")
    response = api.transfer(customer["id"], world["id"], 3, reference="relayed")

    try:
        relay_run()
        messages = [json.loads(raw) for raw in broker.lrange("webhooks", 0, -1)]
    finally:
        broker.delete("webhooks")

    assert {m["headers"]["task"] for m in messages} == {"webhooks.ingest"}
    published = [event_expand(item) for m in messages for item in json.loads(base64.b64decode(m["body"]))[0][0]]
    (event,) = [e for e in published if e.get("data", {}).get("id") == response.json()["id"]]
    assert (event["type"], event["service"]) == ("ledger.transaction.posted", "ledger")
    assert event["request_id"] == response["X-Request-ID"]
