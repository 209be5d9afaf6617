"""The ledger, as the payments service sees it: an HTTP API reached with this service's own JWT.

Calls go through the kit's :class:`~services.kit.http.ServiceClient` (timeouts, retries with exponential
backoff and jitter, a circuit breaker per upstream). Every write is idempotent at the ledger: a hold is
created with ``reference = payment id`` (the same body again is a replay), and posting or voiding a
transaction that is no longer pending is answered by reading it back.

Errors: :class:`LedgerRefused` when the ledger said no for a business reason (``insufficient_funds``,
``account_closed``, …: final for the payment); :class:`~services.kit.http.UpstreamUnavailable` when it
could not be reached or answered 5xx (the payment waits and is retried).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from django.conf import settings

from services.kit.batches import batch_isolate
from services.kit.carry import acting_for
from services.kit.context import request_id_clean
from services.kit.http import ServiceClient, UpstreamUnavailable, default_credentials
from services.kit.logs import get_logger

log = get_logger(__name__)

HOLD_LIFETIME = dt.timedelta(days=7)  # the ledger voids a hold nobody posted or voided by then
_ACCOUNT_CACHE_SECONDS = 60.0
BATCH_MAX = 1000  # items per call to the ledger's batch endpoints (their limit)
PROCESSING_ERROR = "processing_error"  # an item the ledger (or its answer) failed on: not a refusal
CONNECT_TIMEOUT = 2.0  # seconds to open a connection to the ledger (the kit client's default)
BACKOFF_MAX = 1.0  # the longest wait between two tries of one call (also when the ledger asks for more: 429)


def call_seconds(*, timeout: float | None = None, retries: int | None = None) -> float:
    """The longest one ledger call may take: every try connecting and waiting for the answer to their timeouts,
    and the longest wait between tries. A worker's lease outlasts it (see :mod:`services.payments.processing`)."""
    timeout = settings.PAYMENTS_LEDGER_TIMEOUT if timeout is None else timeout
    retries = settings.PAYMENTS_LEDGER_RETRIES if retries is None else retries
    return (retries + 1) * (CONNECT_TIMEOUT + timeout) + retries * BACKOFF_MAX


class LedgerRefused(Exception):
    """The ledger refused the request for a business reason (its problem ``code`` and ``detail``)."""

    def __init__(self, code: str, detail: str, status: int) -> None:
        # The arguments are the exception's args, so it can be rebuilt from them (pickle, Celery's results).
        super().__init__(code, detail, status)
        self.code = code
        self.detail = detail
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class LedgerFailed(Exception):
    """The ledger answered 500: it is up, but met an unexpected error on this request (a bug, or an item it cannot
    process). Not a refusal and not an outage: a batch that meets it is split until the item is found."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status, code, detail)
        self.status = status
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return f"ledger answered {self.status} {self.code}: {self.detail}"


def _problem(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "ledger_error", response.text[:200]
    if not isinstance(body, dict):
        return "ledger_error", str(body)[:200]
    return str(body.get("code") or "ledger_error"), str(body.get("detail") or body.get("title") or "")[:500]


class Ledger:
    """The calls payments makes to the ledger."""

    def __init__(self, client: ServiceClient | None = None) -> None:
        self.client = client or ServiceClient(
            base_url=settings.LEDGER_URL,
            audience="ledger",
            credentials=default_credentials(),
            timeout=settings.PAYMENTS_LEDGER_TIMEOUT,
            connect_timeout=CONNECT_TIMEOUT,
            retries=settings.PAYMENTS_LEDGER_RETRIES,
            backoff_max=BACKOFF_MAX,
        )
        self._accounts: dict[str, tuple[dict[str, Any], float]] = {}
        self._lock = threading.Lock()

    def _json(self, response: httpx.Response, *, not_found_ok: bool = False) -> dict[str, Any] | None:
        """The body of a 2xx; None for a 404 when allowed; raise for anything else."""
        if 200 <= response.status_code < 300:
            return response.json()
        if response.status_code == 404 and not_found_ok:
            return None
        code, detail = _problem(response)
        if response.status_code in (500, 501):
            log.error("payments.ledger_failed", status=response.status_code, code=code, detail=detail)
            raise LedgerFailed(response.status_code, code, detail)
        if response.status_code in (401, 403, 429) or response.status_code >= 500:
            # Our credentials, throttling, or the ledger (or its database) away: not the payment's fault, retried.
            log.warning("payments.ledger_unavailable", status=response.status_code, code=code, detail=detail)
            raise UpstreamUnavailable(f"ledger answered {response.status_code} {code}: {detail}")
        raise LedgerRefused(code, detail, response.status_code)

    def account(self, account_id: str) -> dict[str, Any] | None:
        """The account (cached briefly: accounts are never deleted), or None if the ledger has none."""
        now = time.monotonic()
        with self._lock:
            cached = self._accounts.get(account_id)
            if cached is not None and cached[1] > now:
                return cached[0]
        body = self._json(self.client.get(f"/api/v1/accounts/{account_id}"), not_found_ok=True)
        if body is not None:
            with self._lock:
                if len(self._accounts) > 10_000:
                    self._accounts.clear()
                self._accounts[account_id] = (body, now + _ACCOUNT_CACHE_SECONDS)
        return body

    @staticmethod
    def hold_body(
        *,
        reference: str,
        amount: int,
        currency: str,
        source: str,
        destination: str,
        expires_at: dt.datetime,
        description: str = "",
        request_id: str = "",
    ) -> dict[str, Any]:
        """The pending transaction moving a payment's money (the same body on every attempt: a retry replays).
        ``request_id`` (the payment's) goes with it when there is one: the ledger stores it on the transaction
        and its audit events (a batch item's own request id; the ledger leaves it out of the replay check).
        For ``/transactions/batch`` only: the single endpoint takes it as ``X-Request-ID`` (:meth:`hold`)."""
        body = {
            "reference": reference,
            "description": description,
            "pending": True,
            "currency": currency,
            "postings": [
                {"account": source, "direction": "debit", "amount": amount},
                {"account": destination, "direction": "credit", "amount": amount},
            ],
            "metadata": {"payment": reference},
            "expires_at": expires_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        if request_id_clean(request_id):  # one the ledger would refuse is never worth failing a payment for
            body["request_id"] = request_id
        return body

    def holds(
        self, bodies: list[dict[str, Any]], *, before_call: Callable[[], None] | None = None
    ) -> list[dict[str, Any]]:
        """Create (or find again) many holds in one call to ``/transactions/batch`` (not atomic: each item has its
        own result ``{index, status: created|exists|error, id?, code?, detail?}``, in the order given).
        ``before_call`` runs before each HTTP call (a split batch makes several): the worker keeps its lease."""
        results: list[dict[str, Any]] = []
        for start in range(0, len(bodies), BATCH_MAX):
            chunk = bodies[start : start + BATCH_MAX]
            results.extend(self._batch("/api/v1/transactions/batch", chunk, lambda c: {"transactions": c}, before_call))
        return results

    def settle_many(
        self,
        transaction_ids: list[str],
        *,
        post: bool,
        request_ids: list[str] | None = None,
        before_call: Callable[[], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Post (or void) many holds in one call to ``/transactions/batch/settle``; one result per id, in order:
        ``{index, status: posted|voided|error, id?, code?, detail?}``. Already posted (voided) is success.
        ``request_ids`` (same order; "" for none): each item's own request id (its payment's), sent as
        ``{"id", "request_id"}`` so the ledger's audit event of that item carries it. ``before_call`` as for
        :meth:`holds`."""
        if request_ids is not None and len(request_ids) != len(transaction_ids):
            raise ValueError("settle_many: request_ids must have one entry per transaction id")
        items: list[Any] = (
            transaction_ids
            if request_ids is None
            else [
                {"id": transaction_id, "request_id": request_id} if request_id_clean(request_id) else transaction_id
                for transaction_id, request_id in zip(transaction_ids, request_ids, strict=True)
            ]
        )
        results: list[dict[str, Any]] = []
        action = "post" if post else "void"
        for start in range(0, len(items), BATCH_MAX):
            chunk = items[start : start + BATCH_MAX]
            results.extend(
                self._batch(
                    "/api/v1/transactions/batch/settle",
                    chunk,
                    lambda c: {"action": action, "transactions": c},
                    before_call,
                )
            )
        return results

    def _batch(
        self,
        path: str,
        items: list[Any],
        body: Callable[[list[Any]], dict[str, Any]],
        before_call: Callable[[], None] | None = None,
    ) -> list[dict[str, Any]]:
        """One call to a batch endpoint: one result per item, in order.

        A whole call that the ledger refuses (a 4xx for the request, not for an item) or fails (a 500, or an answer
        without one result per item) because of one item is never the batch's fate: the call is split
        (:func:`services.kit.batches.batch_isolate`) until that item is alone. A refusal becomes the item's result
        with the ledger's code; a failure becomes ``{"status": "error", "code": "processing_error",
        "unexpected": true}`` — the payment is then retried alone and parked if it keeps failing. Splitting costs
        only calls, not database work. When every item of a larger batch fails on its own, the ledger is failing,
        not an item: that is :class:`UpstreamUnavailable` (the payments wait), never a reason to park them all."""

        def alone(item: Any, exc: Exception) -> list[dict[str, Any]]:
            if isinstance(exc, LedgerRefused):
                log.warning("payments.ledger_item_refused", path=path, code=exc.code, detail=exc.detail)
                return [{"index": 0, "status": "error", "code": exc.code, "detail": exc.detail}]
            log.error("payments.ledger_item_failed", path=path, error=str(exc)[:300])
            return [
                {"index": 0, "status": "error", "code": PROCESSING_ERROR, "detail": str(exc)[:500], "unexpected": True}
            ]

        def call(part: Any) -> list[dict[str, Any]]:
            if before_call is not None:
                before_call()
            return self._batch_call(path, list(part), body)

        results = batch_isolate(
            items,
            call,
            item_error=lambda exc: isinstance(exc, LedgerRefused | LedgerFailed),
            alone=alone,
            merge=lambda left, right: left + right,
            event="payments.ledger_batch_split",
        )
        if len(items) > 1 and all(r.get("unexpected") for r in results):
            raise UpstreamUnavailable(f"{path}: every item of the batch failed on its own; the ledger is failing")
        return results

    def _batch_call(
        self, path: str, items: list[Any], body: Callable[[list[Any]], dict[str, Any]]
    ) -> list[dict[str, Any]]:
        reply = self._json(self.client.post(path, json=body(items)))
        results = reply.get("results") if isinstance(reply, dict) else None
        if (
            not isinstance(results, list)
            or len(results) != len(items)
            or not all(isinstance(r, dict) and isinstance(r.get("status"), str) for r in results)
        ):
            raise LedgerFailed(200, "malformed_reply", f"{path} answered without one result (with a status) per item")
        return sorted(results, key=lambda r: r.get("index", 0))

    def hold(
        self,
        *,
        reference: str,
        amount: int,
        currency: str,
        source: str,
        destination: str,
        expires_at: dt.datetime,
        description: str = "",
        request_id: str = "",
    ) -> dict[str, Any]:
        """Create (or find again: same reference, same body) the pending transaction moving the money.

        The single endpoint takes its request id from ``X-Request-ID`` only: the call is made acting for
        ``request_id`` (the payment's, :func:`services.kit.carry.acting_for`), so the hold carries it as a batched
        one does."""
        body = self.hold_body(
            reference=reference,
            amount=amount,
            currency=currency,
            source=source,
            destination=destination,
            expires_at=expires_at,
            description=description,
        )
        with acting_for(request_id, object_id=reference):
            response = self.client.post("/api/v1/transactions", json=body, idempotency_key=reference)
        result = self._json(response)
        assert result is not None
        return result

    def by_reference(self, reference: str) -> dict[str, Any] | None:
        """The ledger transaction created with ``reference`` (a payment's hold), or None."""
        page = self._json(self.client.get("/api/v1/transactions", params={"reference": reference}))
        results = page.get("results", []) if isinstance(page, dict) else []
        return results[0] if results else None

    def transaction(self, transaction_id: str) -> dict[str, Any] | None:
        return self._json(self.client.get(f"/api/v1/transactions/{transaction_id}"), not_found_ok=True)

    def _settle(self, transaction_id: str, verb: str, done: str) -> dict[str, Any]:
        response = self.client.post(f"/api/v1/transactions/{transaction_id}/{verb}", idempotency_key=transaction_id)
        if response.status_code == 409:
            # Not pending any more: a retry of our own call that went through, or someone else's. Read it.
            current = self.transaction(transaction_id)
            if current is not None and current.get("status") == done:
                return current
        result = self._json(response)
        assert result is not None
        return result

    def post(self, transaction_id: str) -> dict[str, Any]:
        """Post the hold; a hold that is already posted is success."""
        return self._settle(transaction_id, "post", "posted")

    def void(self, transaction_id: str) -> dict[str, Any]:
        """Void the hold; a hold that is already voided is success."""
        return self._settle(transaction_id, "void", "voided")

    def transactions(
        self, *, reference_prefix: str, created_after: dt.datetime, created_before: dt.datetime
    ) -> Iterator[dict[str, Any]]:
        """Every ledger transaction whose reference starts with ``reference_prefix`` in the time range."""
        params: dict[str, Any] = {
            "reference_prefix": reference_prefix,
            "created_after": created_after.isoformat(),
            "created_before": created_before.isoformat(),
            "limit": 200,
        }
        path = "/api/v1/transactions"
        while True:
            page = self._json(self.client.get(path, params=params))
            assert page is not None
            yield from page.get("results", [])
            following = page.get("next")
            if not following:
                return
            url = httpx.URL(following)
            path, params = url.path, dict(url.params)


_ledger: Ledger | None = None
_ledger_lock = threading.Lock()


def ledger() -> Ledger:
    """This process's ledger gateway (one HTTP connection pool, one circuit breaker)."""
    global _ledger
    with _ledger_lock:
        if _ledger is None:
            _ledger = Ledger()
        return _ledger


def ledger_reset() -> None:
    """Forget the gateway (settings changed: tests)."""
    global _ledger
    with _ledger_lock:
        if _ledger is not None:
            _ledger.client.close()
        _ledger = None
