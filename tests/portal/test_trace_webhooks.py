"""The trace shows the webhook messages of the payments and transactions it touched, with their deliveries and
attempts, read from the webhooks service's API with the portal's machine identity; when webhooks is down,
refuses or answers nonsense, the trace still renders and says so.

The webhooks service here is a real local HTTP server answering the contract's JSON shapes
(``GET /api/v1/messages?object_id=``, ``GET /api/v1/messages/{id}`` with its deliveries,
``GET /api/v1/attempts?message=``), and the portal's token endpoint another one.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client

from portal.trace import webhooks as trace_webhooks
from services.kit import http as kit_http
from tests.portal.factories import user_with_role
from tests.portal.test_trace import flow  # noqa: F401  (the fixture: two payments, a transaction, a drain)
from tests.servers import LocalServer, Seen, json_reply

pytestmark = pytest.mark.django_db

PORTAL_CLIENT, PORTAL_SECRET = "cli_portal_trace", "portal-trace-secret"


def message(msg_id: str, event_type: str, object_id: str, created_at: str, request_id: str) -> dict[str, Any]:
    """A message as ``GET /api/v1/messages`` lists it (the webhooks API's MessageSerializer)."""
    return {
        "id": msg_id,
        "event_id": f"evt_{msg_id}",
        "type": event_type,
        "channels": ["acc_src", "acc_dst"],
        "data": {"id": object_id, "amount": 1500, "secret_note": "not for the trace"},
        "timestamp": created_at,
        "source": "payments" if object_id.startswith("pay_") else "ledger",
        "request_id": request_id,
        "object_id": object_id,
        "created_at": created_at,
    }


class Webhooks:
    """The webhooks API and the portal's token endpoint as scripted HTTP servers; what they saw."""

    def __init__(self, start: Callable[..., LocalServer]) -> None:
        self.messages = {
            "pay_1": [
                message("msg_settled", "payment.settled", "pay_1", "2026-12-01T10:00:01.700000Z", "req_pay1"),
                message("msg_created", "payment.created", "pay_1", "2026-12-01T10:00:00.100000Z", "req_pay1"),
            ],
            "txn_1": [
                message("msg_posted", "ledger.transaction.posted", "txn_1", "2026-12-01T10:00:01.600000Z", "req_pay1")
            ],
        }
        self.deliveries = {
            "msg_created": [{"endpoint": "ep_a", "state": "succeeded", "attempts": 1, "last_status": 200}],
            "msg_settled": [
                {"endpoint": "ep_a", "state": "succeeded", "attempts": 1, "last_status": 204},
                {
                    "endpoint": "ep_b",
                    "state": "pending",
                    "attempts": 2,
                    "next_attempt_at": "2026-12-01T10:05:02Z",
                    "last_status": 500,
                    "last_error": "status",
                    "succeeded_at": None,
                    "created_at": "2026-12-01T10:00:01.700000Z",
                    "updated_at": "2026-12-01T10:00:07Z",
                },
            ],
            "msg_posted": [],
        }
        self.attempts = {
            "msg_created": [self.attempt("ep_a", 1, "2026-12-01T10:00:00.150000Z", 200, "", 12.5)],
            "msg_settled": [
                self.attempt("ep_b", 2, "2026-12-01T10:00:07Z", 500, "status", 40),
                self.attempt("ep_a", 1, "2026-12-01T10:00:01.750000Z", 204, "", 8),
                self.attempt("ep_b", 1, "2026-12-01T10:00:01.760000Z", None, "timeout", 15000),
            ],
            "msg_posted": [],
        }
        self.refuse: tuple[int, bytes] | None = None
        self.document: Any = None  # answered instead of every list when set
        self.tokens = start(self._token)
        self.api = start(self._api)

    @staticmethod
    def attempt(endpoint: str, number: int, at: str, status: int | None, error: str, ms: float) -> dict[str, Any]:
        return {
            "id": number,
            "message": "msg",
            "endpoint": endpoint,
            "number": number,
            "at": at,
            "duration_ms": ms,
            "status_code": status,
            "response_body": "receiver's answer",
            "error": error,
            "trigger": "scheduled",
            "request_id": "req_pay1",
        }

    def _token(self, seen: Seen) -> Any:
        form = dict(urllib.parse.parse_qsl(seen.body.decode()))
        if (form.get("client_id"), form.get("client_secret")) != (PORTAL_CLIENT, PORTAL_SECRET):
            return json_reply(401, {"code": "invalid_client"})
        return json_reply(200, {"access_token": f"tok-for-{form['audience']}", "expires_in": 900})

    def _api(self, seen: Seen) -> Any:
        url = urllib.parse.urlsplit(seen.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if seen.headers.get("authorization") != "Bearer tok-for-webhooks":
            return json_reply(401, {"code": "invalid_token"})
        if self.refuse is not None:
            return self.refuse[0], {"Content-Type": "application/problem+json"}, self.refuse[1]
        if self.document is not None:
            return json_reply(200, self.document)
        if url.path == "/api/v1/messages":
            return json_reply(
                200, {"next": None, "previous": None, "results": self.messages.get(query["object_id"], [])}
            )
        if url.path.startswith("/api/v1/messages/"):
            msg_id = url.path.rsplit("/", 1)[1]
            found = next((m for ms in self.messages.values() for m in ms if m["id"] == msg_id), None)
            if found is None:
                return json_reply(404, {"code": "message_not_found"})
            return json_reply(200, {**found, "deliveries": self.deliveries[msg_id]})
        if url.path == "/api/v1/attempts":
            return json_reply(200, {"next": None, "previous": None, "results": self.attempts[query["message"]]})
        return json_reply(404, {"code": "not_found"})


@pytest.fixture
def webhooks(local_server: Callable[..., LocalServer], settings: Any, flow: None) -> Iterator[Webhooks]:  # noqa: F811
    found = Webhooks(local_server)
    settings.WEBHOOKS_URL = found.api.url
    settings.ATRIUM_TOKEN_URL = found.tokens.url + "/api/v1/auth/token"
    settings.ATRIUM_CLIENT_ID, settings.ATRIUM_CLIENT_SECRET = PORTAL_CLIENT, PORTAL_SECRET
    kit_http._breakers.clear()
    kit_http._shared_clients.clear()
    yield found
    kit_http._breakers.clear()
    kit_http._shared_clients.clear()


def logged_in(role: str) -> Client:
    client = Client()
    client.force_login(user_with_role(role))
    return client


def test_the_trace_of_a_request_lists_its_payment_s_and_transaction_s_messages_with_deliveries_and_attempts(
    webhooks: Webhooks,
):
    response = logged_in("auditor").get("/api/v1/trace/req_pay1")

    assert response.status_code == 200, response.content
    found = response.json()["webhooks"]
    assert (found["state"], found["detail"], found["truncated"]) == ("ok", "", False)
    # oldest first, across the payment and its ledger transaction
    assert [(m["id"], m["type"], m["object_id"]) for m in found["messages"]] == [
        ("msg_created", "payment.created", "pay_1"),
        ("msg_posted", "ledger.transaction.posted", "txn_1"),
        ("msg_settled", "payment.settled", "pay_1"),
    ]
    settled = found["messages"][2]
    assert settled["pending"] is True
    assert settled["request_id"] == "req_pay1"
    assert settled["deliveries"][1] == {
        "endpoint": "ep_b",
        "state": "pending",
        "attempts": 2,
        "last_status": 500,
        "next_attempt_at": "2026-12-01T10:05:02Z",
    }
    assert [(a["endpoint"], a["number"], a["status_code"], a["error"]) for a in settled["attempts"]] == [
        ("ep_a", 1, 204, ""),
        ("ep_b", 1, None, "timeout"),
        ("ep_b", 2, 500, "status"),
    ]
    assert settled["attempts"][1]["duration_ms"] == 15000.0
    assert found["messages"][1]["deliveries"] == []
    assert "data" not in settled  # the trace shows what happened, not what was sent
    assert "response_body" not in settled["attempts"][0]
    # asked with the portal's machine identity: one list per object, then each message and its attempts
    paths = [urllib.parse.urlsplit(s.path) for s in webhooks.api.calls()]
    lists = sorted(dict(urllib.parse.parse_qsl(p.query))["object_id"] for p in paths if p.path == "/api/v1/messages")
    assert lists == ["pay_1", "txn_1"]
    assert len(paths) == 2 + 3 * 2
    assert {s.headers["authorization"] for s in webhooks.api.calls()} == {"Bearer tok-for-webhooks"}


def test_the_page_shows_each_message_its_deliveries_and_attempts(webhooks: Webhooks):
    response = logged_in("operator").get("/admin/trace/", {"q": "pay_1"})

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="trace-webhooks" data-state="ok"' in page
    assert 'data-message-id="msg_settled" data-type="payment.settled" class="trace-row-pending"' in page
    assert 'data-endpoint="ep_b" data-state="pending"' in page
    assert 'data-endpoint="ep_b" data-status="" data-error="timeout"' in page
    assert 'data-endpoint="ep_b" data-status="500" data-error="status"' in page
    assert "not for the trace" not in page
    assert "receiver&#x27;s answer" not in page


def test_a_viewer_sees_the_messages_too(webhooks: Webhooks):
    response = logged_in("viewer").get("/api/v1/trace/req_pay1")

    assert response.status_code == 200
    body = response.json()
    assert body["audit_visible"] is False
    assert len(body["webhooks"]["messages"]) == 3


def test_webhooks_down_the_trace_renders_and_says_so(webhooks: Webhooks):
    webhooks.api.stop()

    api = logged_in("auditor").get("/api/v1/trace/req_pay1")
    page = logged_in("auditor").get("/admin/trace/", {"q": "req_pay1"})

    assert (api.status_code, page.status_code) == (200, 200)
    found = api.json()["webhooks"]
    assert (found["state"], found["messages"]) == ("unavailable", [])
    assert "upstream_unavailable" in found["detail"]
    assert len(api.json()["timeline"]) == 8  # the rest of the trace is all there
    assert 'id="trace-webhooks-down"' in page.content.decode()
    assert "could not be read" in page.content.decode()


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        ((403, b'{"code": "insufficient_scope"}'), "webhooks answered 403 insufficient_scope"),
        ((500, b"<html>oops</html>"), "webhooks answered 500"),
    ],
)
def test_webhooks_refusing_is_said_not_a_500(webhooks: Webhooks, refusal: tuple[int, bytes], said: str):
    webhooks.refuse = refusal

    response = logged_in("auditor").get("/api/v1/trace/req_pay1")

    assert response.status_code == 200
    assert response.json()["webhooks"]["state"] == "unavailable"
    assert response.json()["webhooks"]["detail"] == said
    assert len(webhooks.api.calls()) == 1  # the first refusal ends the reading


@pytest.mark.parametrize("document", [{"results": "many"}, {"results": [1, 2]}, {"no": "results"}])
def test_a_document_not_as_documented_is_said_not_a_500(webhooks: Webhooks, document: Any):
    webhooks.document = document

    response = logged_in("auditor").get("/admin/trace/", {"q": "req_pay1"})

    assert response.status_code == 200
    assert "webhooks answered an unexpected document" in response.content.decode()


def test_without_machine_credentials_or_url_the_trace_says_what_is_missing(webhooks: Webhooks, settings: Any):
    settings.ATRIUM_CLIENT_ID = ""
    no_identity = logged_in("auditor").get("/api/v1/trace/req_pay1").json()["webhooks"]
    settings.ATRIUM_CLIENT_ID = PORTAL_CLIENT
    settings.WEBHOOKS_URL = ""
    no_url = logged_in("auditor").get("/api/v1/trace/req_pay1").json()["webhooks"]

    assert no_identity["state"] == "unavailable"
    assert "PORTAL_CLIENT_ID" in no_identity["detail"]
    assert no_url["detail"] == "WEBHOOKS_URL is not set"
    assert webhooks.api.calls() == []


def test_a_trace_without_payments_or_transactions_asks_nothing(webhooks: Webhooks):
    assert trace_webhooks.webhook_messages(["acc_1", "ledger", "cli_x"]).state == "none"
    assert webhooks.api.calls() == []


def test_the_calls_of_one_trace_are_bounded(webhooks: Webhooks, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(trace_webhooks, "MAX_CALLS", 3)

    found = logged_in("auditor").get("/api/v1/trace/req_pay1").json()["webhooks"]

    assert found["state"] == "ok"
    assert found["truncated"] is True
    assert len(webhooks.api.calls()) == 3
