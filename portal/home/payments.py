"""The payments service as the home reads it: ``GET /api/v1/payments/stats`` over HTTP with the kit's client and the
portal's own machine identity (client credentials from ``PORTAL_CLIENT_ID`` / ``_SECRET``, audience ``payments``,
scope ``payments:read``).

A home must render when payments is away: one short try per window (no retries: the page refreshes every few
seconds anyway) behind the kit's circuit breaker, and every failure is a :class:`PaymentsUnavailable` saying why.

A day of payments is a grouped scan of a day of rows (about 1 s at 1.2 million a day, docs/payments.md), too much
for every viewer's refresh every few seconds: an answer is kept in the process for ``max_age`` seconds (the home
asks for the day's with ``HOME_PAYMENTS_DAY_SECONDS``, 60, and for the hour's fresh each time).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from services.kit.errors import DomainError
from services.kit.http import ServiceClient, shared_client

AUDIENCE = "payments"
STATS_PATH = "/api/v1/payments/stats"
TIMEOUT_SECONDS = 2.0


class PaymentsUnavailable(Exception):
    """The stats could not be had; ``reason`` says why, in words for the page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_answers: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}  # (base URL, window) -> (when, document)


def _client() -> ServiceClient:
    """One client per process (per URL and identity: tests change them), so the token is cached between pages."""
    return shared_client(
        url_setting="PAYMENTS_URL", audience=AUDIENCE, timeout=TIMEOUT_SECONDS, unavailable=PaymentsUnavailable
    )


def payments_stats(*, window: str, max_age: float = 0) -> dict[str, Any]:
    """The payments service's stats document for ``window`` (``1h`` or ``24h``), or :class:`PaymentsUnavailable`;
    an answer younger than ``max_age`` seconds is given again without asking."""
    client = _client()
    key = (client.base_url, window)
    kept = _answers.get(key)
    if kept is not None and time.monotonic() - kept[0] < max_age:
        return kept[1]
    try:
        response = client.get(STATS_PATH, params={"window": window})
    except DomainError as exc:  # unreachable, circuit open, or the token endpoint refused the portal
        raise PaymentsUnavailable(f"{exc.code}: {exc.detail}") from exc
    except httpx.InvalidURL as exc:  # a PAYMENTS_URL or ATRIUM_TOKEN_URL httpx cannot send to
        raise PaymentsUnavailable(f"a URL the portal was given is not one ({exc})") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        code = body.get("code") if isinstance(body, dict) else None
        raise PaymentsUnavailable(f"payments answered {response.status_code}" + (f" {code}" if code else ""))
    if not isinstance(body, dict) or not isinstance(body.get("statuses"), list):
        raise PaymentsUnavailable("payments answered an unexpected document")
    _answers[key] = (time.monotonic(), body)
    return body
