"""The webhooks admin: pages read through the selectors (success rate over 24 h, last error, a message's
deliveries, an attempt's answer), operators' actions (disable with a reason, enable, recover, resend) calling the
write services and audited, viewers and auditors reading only (no buttons; a POST is 403 and changes nothing).

People are made as the portal's sign-in makes them (``user_sync`` with their roles) and logged in directly."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from services.kit.models import OutboxEvent
from services.kit.sso import user_sync
from services.webhooks import secrets
from services.webhooks.models import Attempt, Delivery, DeliveryState, Endpoint, Message, Recovery

pytestmark = pytest.mark.django_db


@dataclass
class Rows:
    endpoint: Endpoint
    other: Endpoint
    message: Message
    delivery: Delivery


def _message(seq_hint: str, object_id: str, kind: str = "payment.settled") -> Message:
    now = timezone.now()
    body = {"type": kind, "timestamp": now.isoformat(), "data": {"id": object_id, "status": "settled"}}
    return Message.objects.create(
        event_id=f"evt_{seq_hint}",
        type=kind,
        channels=["acc_alice", "acc_bob"],
        payload=body["data"],
        body=json.dumps(body, separators=(",", ":")),
        occurred_at=now,
        source="payments",
        object_id=object_id,
    )


@pytest.fixture
def rows(settings: Any) -> Rows:
    """An endpoint with 3 successes and 1 failure in the last 24 h (and an old failure that no longer counts), a
    disabled one, a message delivered to the first with its attempts."""
    settings.ATRIUM_OUTBOX_RELAY = "off"
    now = timezone.now()
    endpoint = Endpoint.objects.create(
        url="https://hooks.example.com/atrium",
        event_types=["payment.*"],
        secret=secrets.encrypt(secrets.secret_new()),
        last_error="status",
        last_status=503,
        last_success_at=now - dt.timedelta(minutes=5),
    )
    other = Endpoint.objects.create(
        url="https://gone.example.com/hook",
        event_types=["*"],
        secret=secrets.encrypt(secrets.secret_new()),
        enabled=False,
        disabled_reason="gone",
        disabled_at=now,
    )
    message = _message("1", "pay_admin1")
    delivery = Delivery.objects.create(
        message=message, endpoint=endpoint, msg_seq=message.seq, state=DeliveryState.FAILED, attempts=2
    )
    answers = [(200, "", "thanks"), (200, "", "ok"), (200, "", "ok"), (503, "status", "upstream down: try later")]
    for number, (status, error, text) in enumerate(answers, start=1):
        Attempt.objects.create(
            delivery=delivery,
            message_id=message.id,
            endpoint_id=endpoint.id,
            number=number,
            at=now - dt.timedelta(minutes=10 * number),
            duration_ms=12,
            status_code=status,
            response_body=text,
            error=error,
        )
    Attempt.objects.create(
        delivery=delivery,
        message_id=message.id,
        endpoint_id=endpoint.id,
        number=9,
        at=now - dt.timedelta(hours=30),
        error="timeout",
    )
    return Rows(endpoint, other, message, delivery)


def signed_in(role: str, name: str | None = None) -> Client:
    user = user_sync(claims={"sub": f"sub-{role}", "preferred_username": name or f"{role}-1", "roles": [role]})
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


def audit_actions() -> list[str]:
    return [e.payload["action"] for e in OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")]


def test_the_endpoints_list_shows_the_success_rate_over_24_hours_and_the_last_error(rows: Rows):
    page = signed_in("viewer").get("/admin/webhooks/endpoint/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "<title>" in text
    assert "Atrium webhooks admin" in text
    assert "https://hooks.example.com/atrium" in text
    assert "75.0&nbsp;%" in text  # 3 of 4 attempts in 24 h: the 30 h old one does not count
    assert "(3/4)" in text
    assert "status · HTTP 503" in text
    assert "disabled</span>: gone" in text
    assert text.count('class="wh-rate"') == 2  # the disabled one has no attempts: a dash


def test_pages_open_for_a_viewer_with_the_deliveries_and_the_answers(rows: Rows):
    viewer = signed_in("viewer")
    endpoint = viewer.get(f"/admin/webhooks/endpoint/{rows.endpoint.id}/change/").content.decode()
    assert rows.message.id in endpoint
    assert "pay_admin1" in endpoint
    assert "secret" not in endpoint.lower().replace("secrets", "")  # never the secret
    message = viewer.get(f"/admin/webhooks/message/{rows.message.id}/change/").content.decode()
    assert "Deliveries (one per endpoint)" in message
    assert rows.endpoint.url in message
    assert "failed" in message
    assert "&quot;pay_admin1&quot;" in message  # the body as sent
    attempts = viewer.get("/admin/webhooks/attempt/", {"message_id": rows.message.id}).content.decode()
    assert "upstream down: try later" in attempts
    one = Attempt.objects.get(response_body="upstream down: try later")
    detail = viewer.get(f"/admin/webhooks/attempt/{one.id}/change/").content.decode()
    assert "<pre" in detail
    assert "upstream down: try later" in detail
    for path in ("recovery", "eventtype"):
        assert viewer.get(f"/admin/webhooks/{path}/").status_code == 200
    assert viewer.get("/admin/webhooks/eventtype/payment.settled/change/").status_code == 200


@pytest.mark.parametrize("role", ["viewer", "auditor"])
def test_viewers_and_auditors_see_no_actions_and_are_refused_when_they_post(rows: Rows, role: str):
    reader = signed_in(role)
    endpoint = reader.get(f"/admin/webhooks/endpoint/{rows.endpoint.id}/change/").content.decode()
    message = reader.get(f"/admin/webhooks/message/{rows.message.id}/change/").content.decode()
    assert "wh-action" not in endpoint
    assert "wh-action" not in message
    assert "enable_selected" not in reader.get("/admin/webhooks/endpoint/").content.decode()

    base = f"/admin/webhooks/endpoint/{rows.endpoint.id}"
    posts = [
        (f"{base}/disable/", {"reason": "mine now"}),
        (f"/admin/webhooks/endpoint/{rows.other.id}/enable/", {}),
        (f"{base}/recover/", {"since": "2026-01-01 00:00:00"}),
        (f"/admin/webhooks/message/{rows.message.id}/resend/", {"endpoint": rows.endpoint.id}),
        ("/admin/webhooks/endpoint/", {"action": "enable_selected", "_selected_action": [rows.other.id]}),
    ]
    for path, form in posts:
        assert reader.post(path, form).status_code == 403, path
    assert reader.get(f"{base}/disable/").status_code == 403
    # nothing changed, nothing audited
    assert Endpoint.objects.get(id=rows.endpoint.id).enabled
    assert not Endpoint.objects.get(id=rows.other.id).enabled
    assert not Recovery.objects.exists()
    assert Delivery.objects.get(id=rows.delivery.id).state == DeliveryState.FAILED
    assert not [a for a in audit_actions() if a.startswith("webhooks.")]


def test_an_operator_disables_with_a_reason_and_enables_again_audited(rows: Rows):
    operator = signed_in("operator", "olivia")
    page = operator.get(f"/admin/webhooks/endpoint/{rows.endpoint.id}/change/").content.decode()
    assert 'data-action="disable"' in page
    assert 'data-action="recover"' in page

    # a reason is required
    refused = operator.post(f"/admin/webhooks/endpoint/{rows.endpoint.id}/disable/", {"reason": ""})
    assert refused.status_code == 200
    assert "This field is required" in refused.content.decode()
    done = operator.post(f"/admin/webhooks/endpoint/{rows.endpoint.id}/disable/", {"reason": "receiver moving"})
    assert done.status_code == 302
    endpoint = Endpoint.objects.get(id=rows.endpoint.id)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "receiver moving")
    assert endpoint.disabled_at is not None
    page = operator.get(f"/admin/webhooks/endpoint/{rows.endpoint.id}/change/").content.decode()
    assert 'data-action="enable"' in page
    assert "receiver moving" in page

    assert operator.post(f"/admin/webhooks/endpoint/{rows.endpoint.id}/enable/").status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at) == (True, "", None)

    actions = audit_actions()
    assert actions.count("webhooks.endpoint.disabled") == 1
    assert actions.count("webhooks.endpoint.enabled") == 1
    assert actions.count("webhooks.admin.change") == 2
    disabled = OutboxEvent.objects.get(topic="audit", payload__action="webhooks.endpoint.disabled").payload
    assert disabled["actor"] == {"type": "user", "id": str(endpoint_user_pk("olivia")), "display": "olivia"}
    assert disabled["metadata"]["reason"] == "receiver moving"


def endpoint_user_pk(username: str) -> int:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username).pk


def test_an_operator_enables_from_the_list(rows: Rows):
    operator = signed_in("operator")
    done = operator.post(
        "/admin/webhooks/endpoint/", {"action": "enable_selected", "_selected_action": [rows.other.id]}
    )
    assert done.status_code == 302
    assert Endpoint.objects.get(id=rows.other.id).enabled


def test_an_operator_resends_a_message_and_recovers_an_endpoint(rows: Rows):
    operator = signed_in("operator")
    page = operator.get(f"/admin/webhooks/message/{rows.message.id}/change/").content.decode()
    assert 'data-action="resend"' in page
    form = operator.get(f"/admin/webhooks/message/{rows.message.id}/resend/").content.decode()
    assert rows.endpoint.id in form

    # the button's link (the id quoted as the admin quotes ids) is the one that works
    (resend,) = re.findall(r'data-action="resend" href="([^"]+)"', page)
    assert resend != f"/admin/webhooks/message/{rows.message.id}/resend/"  # "_" is quoted as "_5F"
    done = operator.post(resend, {"endpoint": rows.endpoint.id})
    assert done.status_code == 302
    delivery = Delivery.objects.get(id=rows.delivery.id)
    assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, 0)

    # a window in the future is refused with a message, not a 500
    later = (timezone.now() + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    refused = operator.post(f"/admin/webhooks/endpoint/{rows.endpoint.id}/recover/", {"since": later})
    assert refused.status_code == 200
    assert "in the future" in refused.content.decode()
    since = (timezone.now() - dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")
    done = operator.post(f"/admin/webhooks/endpoint/{rows.endpoint.id}/recover/", {"since": since})
    assert done.status_code == 302
    recovery = Recovery.objects.get(endpoint=rows.endpoint)
    assert recovery.since.strftime("%Y-%m-%d %H:%M:%S") == since
    assert operator.get(f"/admin/webhooks/recovery/{recovery.id}/change/").status_code == 200

    actions = audit_actions()
    assert {"webhooks.message.resent", "webhooks.recovery.requested"} <= set(actions)
    assert actions.count("webhooks.admin.change") == 2


def test_an_action_on_a_missing_object_is_a_404_not_a_500(rows: Rows):
    operator = signed_in("operator")
    assert operator.post("/admin/webhooks/endpoint/ep_missing/disable/", {"reason": "x"}).status_code == 404
    assert operator.post("/admin/webhooks/message/msg_missing/resend/", {"endpoint": "x"}).status_code == 404
