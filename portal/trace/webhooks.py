"""The webhooks service as the trace reads it: the messages made for a payment or a ledger transaction
(``GET /api/v1/messages?object_id=…``), each with its deliveries (``GET /api/v1/messages/{id}``) and its attempts
(``GET /api/v1/attempts?message=…``), over HTTP with the kit's client and the portal's own machine identity
(``PORTAL_CLIENT_ID`` / ``_SECRET``, audience ``webhooks``, scope ``webhooks:read``) at ``WEBHOOKS_URL``.

A trace must render when webhooks is away or refuses: short tries (no retries) behind the kit's circuit breaker,
at most :data:`MAX_CALLS` calls and :data:`BUDGET_SECONDS` per trace, and every failure becomes a report that
says why (``state: unavailable``) instead of an error. Only what a trace needs is kept: ids, types, states,
status codes, errors and times — never the payloads or the receivers' answers.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.kit.errors import DomainError
from services.kit.http import ServiceClient, shared_client

AUDIENCE = "webhooks"
MESSAGES_PATH = "/api/v1/messages"
ATTEMPTS_PATH = "/api/v1/attempts"
TIMEOUT_SECONDS = 2.0
BUDGET_SECONDS = 4.0  # all the calls of one trace
MAX_OBJECTS = 5  # payments / transactions whose messages one trace asks for
MAX_MESSAGES = 20  # messages shown in one trace
MAX_ATTEMPTS = 50  # attempts shown per message
MAX_CALLS = 1 + MAX_OBJECTS + 2 * MAX_MESSAGES
# The objects that have webhook messages: what payments and the ledger publish events about.
OBJECT_PREFIXES = ("pay_", "txn_")


class WebhooksUnavailable(Exception):
    """The webhooks service could not be read; ``reason`` says why, in words for the page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class WebhookAttempt:
    number: int | None
    at: dt.datetime | None
    endpoint: str
    status_code: int | None
    error: str  # "" on success, or timeout, connect, dns, tls, ssrf_blocked, status
    duration_ms: float | None
    trigger: str  # scheduled, manual, recovery


@dataclass(frozen=True)
class WebhookDelivery:
    endpoint: str
    state: str  # pending, succeeded, failed, canceled
    attempts: int | None
    last_status: int | None
    next_attempt_at: dt.datetime | None


@dataclass(frozen=True)
class WebhookMessage:
    id: str
    type: str
    object_id: str
    request_id: str
    created_at: dt.datetime | None
    deliveries: list[WebhookDelivery]
    attempts: list[WebhookAttempt]

    @property
    def pending(self) -> bool:
        return any(d.state == "pending" for d in self.deliveries)


@dataclass
class WebhookReport:
    """What the trace shows of webhooks: ``state`` ``ok`` (``messages``, maybe none), ``unavailable`` (``detail``
    says why), or ``none`` (the trace touched no payment or transaction: nothing was asked)."""

    state: str
    detail: str = ""
    messages: list[WebhookMessage] = field(default_factory=list)
    truncated: bool = False


def _client() -> ServiceClient:
    """One client per process (per URL and identity: tests change them), so the token is cached between traces."""
    return shared_client(
        url_setting="WEBHOOKS_URL", audience=AUDIENCE, timeout=TIMEOUT_SECONDS, unavailable=WebhooksUnavailable
    )


class _Reader:
    """The calls of one trace, within :data:`MAX_CALLS` and :data:`BUDGET_SECONDS`."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client
        self.calls = 0
        self.deadline = time.monotonic() + BUDGET_SECONDS
        self.out_of_budget = False

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The JSON document at ``path``; None once out of calls or time (the report says it is cut);
        :class:`WebhooksUnavailable` when webhooks cannot be read."""
        if self.calls >= MAX_CALLS or time.monotonic() >= self.deadline:
            self.out_of_budget = True
            return None
        self.calls += 1
        try:
            response = self.client.get(path, params=params)
        except DomainError as exc:  # unreachable, circuit open, or the token endpoint refused the portal
            raise WebhooksUnavailable(f"{exc.code}: {exc.detail}") from exc
        except httpx.InvalidURL as exc:
            raise WebhooksUnavailable(f"a URL the portal was given is not one ({exc})") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            code = body.get("code") if isinstance(body, dict) else None
            raise WebhooksUnavailable(f"webhooks answered {response.status_code}" + (f" {code}" if code else ""))
        if not isinstance(body, dict):
            raise WebhooksUnavailable("webhooks answered an unexpected document")
        return body


def _results(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    if body is None:
        return []
    results = body.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise WebhooksUnavailable("webhooks answered an unexpected document")
    return results


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _delivery(row: dict[str, Any]) -> WebhookDelivery:
    return WebhookDelivery(
        endpoint=_text(row.get("endpoint")),
        state=_text(row.get("state")),
        attempts=_int(row.get("attempts")),
        last_status=_int(row.get("last_status")),
        next_attempt_at=_instant(row.get("next_attempt_at")),
    )


def _attempt(row: dict[str, Any]) -> WebhookAttempt:
    return WebhookAttempt(
        number=_int(row.get("number")),
        at=_instant(row.get("at")),
        endpoint=_text(row.get("endpoint")),
        status_code=_int(row.get("status_code")),
        error=_text(row.get("error")),
        duration_ms=_float(row.get("duration_ms")),
        trigger=_text(row.get("trigger")),
    )


def webhook_messages(object_ids: list[str]) -> WebhookReport:
    """The webhook messages of the payments and transactions among ``object_ids``, oldest first, each with its
    deliveries and attempts; never raises for webhooks being away, refusing or answering nonsense."""
    wanted = [o for o in dict.fromkeys(object_ids) if o.startswith(OBJECT_PREFIXES)]
    if not wanted:
        return WebhookReport(state="none")
    truncated = len(wanted) > MAX_OBJECTS
    try:
        reader = _Reader(_client())
        rows: dict[str, dict[str, Any]] = {}
        for object_id in wanted[:MAX_OBJECTS]:
            for row in _results(reader.get(MESSAGES_PATH, {"object_id": object_id, "limit": MAX_MESSAGES})):
                if isinstance(row.get("id"), str):
                    rows.setdefault(row["id"], row)
        ordered = sorted(rows.values(), key=lambda r: (_text(r.get("created_at")), r["id"]))
        truncated = truncated or len(ordered) > MAX_MESSAGES
        messages = []
        for row in ordered[:MAX_MESSAGES]:
            detail = reader.get(f"{MESSAGES_PATH}/{row['id']}") or {}
            deliveries = detail.get("deliveries") if isinstance(detail.get("deliveries"), list) else []
            attempts = _results(reader.get(ATTEMPTS_PATH, {"message": row["id"], "limit": MAX_ATTEMPTS}))
            messages.append(
                WebhookMessage(
                    id=row["id"],
                    type=_text(row.get("type")),
                    object_id=_text(row.get("object_id")),
                    request_id=_text(row.get("request_id")),
                    created_at=_instant(row.get("created_at")),
                    deliveries=[_delivery(d) for d in deliveries if isinstance(d, dict)],
                    attempts=sorted(
                        (_attempt(a) for a in attempts),
                        key=lambda a: (a.at or dt.datetime.min.replace(tzinfo=dt.UTC), a.number or 0),
                    ),
                )
            )
    except WebhooksUnavailable as exc:
        return WebhookReport(state="unavailable", detail=exc.reason)
    return WebhookReport(state="ok", messages=messages, truncated=truncated or reader.out_of_budget)
