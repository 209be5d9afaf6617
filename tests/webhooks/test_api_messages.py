"""The event-type catalog, messages (send, list, filters, detail with deliveries, resend) and the attempt log
through the API, with their refusals and audit events."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from django.utils import timezone

from services.kit.models import OutboxEvent
from services.webhooks.models import Attempt, Delivery, DeliveryState, Endpoint, EventType, Message
from tests.problems import assert_problem
from tests.webhooks.conftest import WebhooksAPI

pytestmark = pytest.mark.django_db


def audits(action: str, outcome: str | None = None) -> list[dict[str, Any]]:
    events = [e.payload for e in OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")]
    return [e for e in events if e["action"] == action and (outcome is None or e["outcome"] == outcome)]


def example(name: str = "payment.settled", **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(EventType.objects.get(name=name).example)
    data.update(changes)
    return data


def send(api: WebhooksAPI, type_: str = "payment.settled", **fields: Any) -> Any:
    body = {"type": type_, "data": fields.pop("data", None) or example(type_), **fields}
    return api.post("messages", body)


def sent(api: WebhooksAPI, type_: str = "payment.settled", **fields: Any) -> dict[str, Any]:
    response = send(api, type_, **fields)
    assert response.status_code == 202, response.content
    return response.json()


# ------------------------------------------------------------------------------------------------ event types


def test_the_catalog_lists_every_seeded_type_with_schema_and_example(api):
    names = [t["name"] for t in api.all("event-types", limit=3)]

    assert names == sorted(names)
    assert {
        "payment.created",
        "payment.settled",
        "payment.failed",
        "payment.rejected",
        "payment.canceled",
        "ledger.transaction.posted",
        "ledger.transaction.voided",
    } <= set(names)
    one = api.get("event-types/payment.settled")
    assert one.status_code == 200
    body = one.json()
    assert body["schema"]["type"] == "object"
    assert body["example"]["id"].startswith("pay_")
    assert body["archived"] is False
    assert body["description"]


def test_an_unknown_event_type_is_404(api):
    assert_problem(api.get("event-types/payment.exploded"), 404, "event_type_not_found")
    assert_problem(api.get("event-types/x"), 404, "event_type_not_found")


# ------------------------------------------------------------------------------------------------ send


def test_a_message_is_accepted_fanned_out_to_matching_endpoints_and_audited(api, endpoint_make):
    everything = endpoint_make(event_types=["*"])
    payments = endpoint_make(event_types=["payment.*"], channels=["acc_A"])
    other_channel = endpoint_make(event_types=["payment.*"], channels=["acc_Z"])
    ledger = endpoint_make(event_types=["ledger.*"])
    disabled = endpoint_make(event_types=["*"], enabled=False)
    data = example(id="pay_01kbq3z4m7x9c2v5b8n1q4w7aa")

    response = send(api, data=data, channels=["acc_A", "acc_B"], event_id="order-1-settled")

    assert response.status_code == 202, response.content
    message = response.json()
    assert message["id"].startswith("msg_")
    assert (message["type"], message["event_id"], message["channels"]) == (
        "payment.settled",
        "order-1-settled",
        ["acc_A", "acc_B"],
    )
    assert message["data"] == data
    assert message["object_id"] == data["id"]
    assert message["source"] == "cli_test"
    assert message["request_id"] == response.headers["X-Request-ID"]
    stored = Message.objects.get(id=message["id"])
    assert json.loads(stored.body) == {
        "type": "payment.settled",
        "timestamp": json.loads(stored.body)["timestamp"],
        "data": data,
    }
    targets = set(Delivery.objects.filter(message_id=message["id"]).values_list("endpoint_id", flat=True))
    assert targets == {everything.id, payments.id}
    assert other_channel.id not in targets
    assert ledger.id not in targets
    assert disabled.id not in targets
    [event] = audits("webhooks.message.created")
    assert event["object"] == {"type": "message", "id": message["id"]}
    assert event["metadata"]["type"] == "payment.settled"


def test_the_same_event_id_creates_nothing_new(api, endpoint_make):
    endpoint_make(event_types=["*"])
    first = sent(api, event_id="evt-same")
    again = sent(api, event_id="evt-same")

    assert again["id"] == first["id"]
    assert Message.objects.count() == 1
    assert Delivery.objects.count() == 1


def test_occurred_at_is_the_body_timestamp(api):
    message = sent(api, occurred_at="2026-12-01T10:00:00+02:00")
    assert message["timestamp"].startswith("2026-12-01T08:00:00")
    assert json.loads(Message.objects.get(id=message["id"]).body)["timestamp"].startswith("2026-12-01T08:00:00")


@pytest.mark.parametrize("type_", ["payment.exploded", "invoice.paid", "payment"])
def test_an_unknown_type_is_422_and_audited(api, type_):
    response = api.post("messages", {"type": type_, "data": {"id": "x"}})

    assert_problem(response, 422, "unknown_event_type")
    assert Message.objects.count() == 0
    assert audits("webhooks.message.created", "failure")[0]["metadata"]["code"] == "unknown_event_type"


def test_an_archived_type_is_refused(api):
    data = example("payment.canceled")
    EventType.objects.filter(name="payment.canceled").update(archived=True)
    assert_problem(api.post("messages", {"type": "payment.canceled", "data": data}), 422, "unknown_event_type")


@pytest.mark.parametrize(
    "change",
    [{"amount": "1250"}, {"amount": 0}, {"id": 7}, {"currency": "euro"}, {"status_history": "none"}],
)
def test_data_not_valid_against_the_schema_is_422(api, change):
    response = send(api, data=example(**change))

    body = assert_problem(response, 422, "invalid_payload")
    assert body["detail"]
    assert Message.objects.count() == 0
    assert audits("webhooks.message.created", "failure")[0]["metadata"]["code"] == "invalid_payload"


def test_missing_required_data_is_422(api):
    data = example()
    del data["currency"]
    assert_problem(send(api, data=data), 422, "invalid_payload")


@pytest.mark.parametrize(
    "body",
    [
        {"data": {}},
        {"type": "payment.settled"},
        {"type": 7, "data": {}},
        {"type": "payment.settled", "data": {}, "channels": "acc_1"},
        {"type": "payment.settled", "data": {}, "event_id": "x" * 65},
        {"type": "payment.settled", "data": {}, "occurred_at": "yesterday"},
        {"type": "payment.settled", "data": {}, "colour": "blue"},
    ],
)
def test_a_malformed_message_is_a_validation_error_and_audited(api, body):
    assert_problem(api.post("messages", body), 400, "validation_error")
    assert audits("webhooks.message.created", "failure")[0]["metadata"]["code"] == "validation_error"


def test_a_body_over_256_kib_is_413_and_one_just_under_is_taken(api):
    data = example(description="x" * (256 * 1024))
    response = api.post("messages", {"type": "payment.settled", "data": data})
    assert_problem(response, 413, "payload_too_large")

    fits = example(metadata={f"k{i}": "y" * 400 for i in range(50)}, description="z" * (200 * 1024))
    assert send(api, data=fits).status_code == 202


def test_a_read_only_token_cannot_send(api):
    reader = api.as_client("cli_reader", scope="webhooks:read")
    assert_problem(send(reader), 403, "insufficient_scope")
    assert Message.objects.count() == 0


# ------------------------------------------------------------------------------------------------ list, detail


def test_messages_are_listed_newest_first_and_filtered(api):
    a = sent(api, data=example(id="pay_a"), channels=["acc_1"])
    b = sent(api, "payment.failed", data=example("payment.failed", id="pay_b"), channels=["acc_2"])
    c = sent(api, data=example(id="pay_c"), channels=["acc_1", "acc_2"])
    Message.objects.filter(id=a["id"]).update(created_at=timezone.now() - dt.timedelta(days=2), request_id="req-a")

    def ids(**params: Any) -> list[str]:
        return [m["id"] for m in api.all("messages", **params)]

    assert ids() == [c["id"], b["id"], a["id"]]
    assert ids(limit=1) == [c["id"], b["id"], a["id"]]
    assert ids(type="payment.settled") == [c["id"], a["id"]]
    assert ids(channel="acc_2") == [c["id"], b["id"]]
    assert ids(object_id="pay_b") == [b["id"]]
    assert ids(request_id="req-a") == [a["id"]]
    assert ids(after=(timezone.now() - dt.timedelta(days=1)).isoformat()) == [c["id"], b["id"]]
    assert ids(before=(timezone.now() - dt.timedelta(days=1)).isoformat()) == [a["id"]]
    assert_problem(api.get("messages", after="yesterday"), 400, "validation_error")


def test_a_message_shows_its_deliveries(api, endpoint_make):
    one = endpoint_make(event_types=["payment.*"])
    two = endpoint_make(event_types=["*"])
    message = sent(api)
    Delivery.objects.filter(endpoint=two).update(
        state=DeliveryState.FAILED, attempts=8, last_status=500, last_error="status"
    )

    body = api.get(f"messages/{message['id']}").json()

    deliveries = {d["endpoint"]: d for d in body["deliveries"]}
    assert set(deliveries) == {one.id, two.id}
    assert deliveries[one.id]["state"] == "pending"
    assert (deliveries[two.id]["state"], deliveries[two.id]["attempts"], deliveries[two.id]["last_status"]) == (
        "failed",
        8,
        500,
    )
    assert_problem(api.get("messages/msg_00000000000000000000000000"), 404, "message_not_found")


# ------------------------------------------------------------------------------------------------ resend


def test_resend_makes_a_failed_delivery_pending_now_with_a_fresh_schedule_marked_manual(api, endpoint_make):
    endpoint = endpoint_make(event_types=["payment.*"])
    message = sent(api)
    later = timezone.now() + dt.timedelta(hours=3)
    Delivery.objects.filter(endpoint=endpoint).update(state=DeliveryState.FAILED, attempts=8, next_attempt_at=later)

    response = api.post(f"messages/{message['id']}/resend", {"endpoint": endpoint.id})

    assert response.status_code == 202, response.content
    assert (response.json()["state"], response.json()["attempts"]) == ("pending", 0)
    delivery = Delivery.objects.get(endpoint=endpoint)
    assert delivery.state == "pending"
    assert delivery.attempts == 0
    assert delivery.next_attempt_at <= timezone.now()
    assert delivery.trigger == "manual"
    [event] = audits("webhooks.message.resent")
    assert event["object"]["id"] == message["id"]
    assert event["metadata"]["endpoint"] == endpoint.id
    assert event["changes"]["delivery_state"] == ["failed", "pending"]


def test_resend_to_a_subscribed_endpoint_that_never_had_it_creates_the_delivery(api, endpoint_make):
    message = sent(api)
    late = endpoint_make(event_types=["payment.settled"])

    assert api.post(f"messages/{message['id']}/resend", {"endpoint": late.id}).status_code == 202
    assert Delivery.objects.get(endpoint=late).state == "pending"


@pytest.mark.parametrize(
    ("endpoint_fields", "code", "status"),
    [
        ({"event_types": ["ledger.*"]}, "endpoint_not_subscribed", 422),
        ({"event_types": ["payment.*"], "channels": ["acc_other"]}, "endpoint_not_subscribed", 422),
        ({"event_types": ["*"], "enabled": False, "disabled_reason": "gone"}, "endpoint_disabled", 409),
    ],
)
def test_resend_refusals_are_audited(api, endpoint_make, endpoint_fields, code, status):
    endpoint = endpoint_make(**endpoint_fields)
    message = sent(api, channels=["acc_1"])

    assert_problem(api.post(f"messages/{message['id']}/resend", {"endpoint": endpoint.id}), status, code)
    assert not Delivery.objects.filter(endpoint=endpoint, state="pending").exclude(attempts=0).exists()
    assert audits("webhooks.message.resent", "failure")[0]["metadata"]["code"] == code


def test_resend_of_an_unknown_message_or_endpoint_is_404(api, endpoint_make):
    endpoint = endpoint_make()
    message = sent(api)
    assert_problem(
        api.post("messages/msg_00000000000000000000000000/resend", {"endpoint": endpoint.id}), 404, "message_not_found"
    )
    assert_problem(
        api.post(f"messages/{message['id']}/resend", {"endpoint": "ep_00000000000000000000000000"}),
        404,
        "endpoint_not_found",
    )
    assert_problem(api.post(f"messages/{message['id']}/resend", {}), 400, "validation_error")
    assert len(audits("webhooks.message.resent", "failure")) == 3


# ------------------------------------------------------------------------------------------------ attempts


def _attempt(endpoint: Endpoint, message_id: str, minutes_ago: int, status: int | None, error: str) -> Attempt:
    return Attempt.objects.create(
        delivery_id=1,
        message_id=message_id,
        endpoint_id=endpoint.id,
        number=1,
        at=timezone.now() - dt.timedelta(minutes=minutes_ago),
        duration_ms=12,
        status_code=status,
        response_body="nope" if error else "ok",
        error=error,
    )


def test_the_attempt_log_is_newest_first_paged_and_filtered(api, endpoint_make):
    a, b = endpoint_make(), endpoint_make()
    rows = [
        _attempt(a, "msg_1", 50, 200, ""),
        _attempt(a, "msg_2", 40, 500, "status"),
        _attempt(b, "msg_1", 30, None, "timeout"),
        _attempt(b, "msg_3", 20, 410, "status"),
        _attempt(a, "msg_3", 10, None, "ssrf_blocked"),
    ]

    def ids(**params: Any) -> list[int]:
        return [x["id"] for x in api.all("attempts", **params)]

    assert ids(limit=2) == [r.id for r in rows[::-1]]
    assert ids(endpoint=a.id) == [rows[4].id, rows[1].id, rows[0].id]
    assert ids(message="msg_1") == [rows[2].id, rows[0].id]
    assert ids(status=500) == [rows[1].id]
    assert ids(error="timeout") == [rows[2].id]
    assert ids(error="status", endpoint=b.id) == [rows[3].id]
    middle = (timezone.now() - dt.timedelta(minutes=35)).isoformat()
    assert ids(after=middle) == [rows[4].id, rows[3].id, rows[2].id]
    assert ids(before=middle) == [rows[1].id, rows[0].id]
    one = api.get("attempts", message="msg_2").json()["results"][0]
    assert (one["status_code"], one["response_body"], one["error"], one["duration_ms"]) == (500, "nope", "status", 12)
    assert_problem(api.get("attempts", error="exploded"), 400, "validation_error")
    assert_problem(api.get("attempts", status="abc"), 400, "validation_error")
    assert_problem(api.get("attempts", status="99999999999999"), 400, "validation_error")
    assert_problem(api.get("attempts", before="soon"), 400, "validation_error")
    assert_problem(api.get("attempts", cursor="nope"), 400, "invalid_cursor")
