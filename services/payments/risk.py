"""The risk service, as the payments service sees it: an HTTP API (``services/risk``, TypeScript) reached with this
service's own JWT (audience ``risk``), asked once per screening batch.

``POST {RISK_URL}/api/v1/assessments`` with ``{"payments": [...]}`` answers ``{"assessments": [...]}`` in the
request's order: for each payment a score (0 to 100), a decision (``allow``, ``review``, ``deny``) and the reasons.
The risk service is idempotent on ``payment_id`` (a payment assessed again gets its stored assessment back), so a
call is safe to repeat: the kit client retries it (``PAYMENTS_RISK_RETRIES``) and a batch that must be split is
simply asked again in halves.

Calls go through the kit's :class:`~services.kit.http.ServiceClient`: timeout ``PAYMENTS_RISK_TIMEOUT``, retries
with backoff and jitter, and a circuit breaker of its own (``RISK_CIRCUIT_RESET`` seconds open, then one trial call:
a payment held while risk is away is tried again at its backoff and is never kept waiting by the breaker longer
than that).

Errors:

* :class:`~services.kit.http.UpstreamUnavailable` — risk could not be reached, timed out, its circuit is open, or
  it answered 5xx (other than 500/501), 401, 403 or 429: not any payment's fault. The caller applies
  ``PAYMENTS_RISK_FALLBACK``. Also raised when every item of a batch fails on its own (risk is failing, not an
  item).
* a 4xx for the request (``validation_error`` …: :class:`RiskRefused`), a 500/501 or an answer that is not one
  assessment per payment (:class:`RiskFailed`) may be one payment's fault: the batch is split
  (:func:`services.kit.batches.batch_isolate`) until that payment is alone; it is left out of the answer and
  reported in ``failures`` (:class:`RiskItemFailed`), and the others are assessed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

from services.kit.batches import batch_isolate
from services.kit.http import ServiceClient, UpstreamUnavailable, circuit_breaker_for, default_credentials
from services.kit.logs import get_logger
from services.payments import metrics
from services.payments.models import Payment

log = get_logger(__name__)

ASSESSMENTS_PATH = "/api/v1/assessments"
BATCH_MAX = 1000  # payments per call (the risk service's limit); a drain's batch is PAYMENTS_BATCH (200)
CONNECT_TIMEOUT = 2.0  # at most: seconds to open a connection (never more than PAYMENTS_RISK_TIMEOUT)
BACKOFF_MAX = 0.5  # the longest wait between two tries of one call
RISK_CIRCUIT_RESET = 5.0  # seconds the breaker stays open before one trial call goes through
RISK_CIRCUIT_FAILURES = 5  # consecutive failures that open it
DECISIONS = ("allow", "review", "deny")
FALLBACKS = ("hold", "allow", "deny")


def enabled() -> bool:
    """Whether payments are screened by the risk service (``RISK_URL`` set)."""
    return bool(settings.RISK_URL)


def _connect_timeout(timeout: float) -> float:
    return min(CONNECT_TIMEOUT, timeout)


def call_seconds(*, timeout: float | None = None, retries: int | None = None) -> float:
    """The longest one risk call may take (every try to its timeouts, and the waits between tries); 0 when risk
    screening is off. A worker's lease outlasts it (system check ``payments.E005``)."""
    if not enabled():
        return 0.0
    timeout = settings.PAYMENTS_RISK_TIMEOUT if timeout is None else timeout
    retries = settings.PAYMENTS_RISK_RETRIES if retries is None else retries
    return (retries + 1) * (_connect_timeout(timeout) + timeout) + retries * BACKOFF_MAX


@dataclass(frozen=True)
class Assessment:
    """The risk service's assessment of one payment."""

    id: str
    payment_id: str
    score: int
    decision: str  # allow | review | deny
    reasons: list[dict[str, Any]] = field(default_factory=list)  # [{code, message, weight}]
    rules_version: int | None = None

    @property
    def codes(self) -> list[str]:
        """The reasons' codes, in the risk service's order."""
        return [str(r.get("code", "")) for r in self.reasons]

    def explain(self) -> str:
        """The assessment in words (a rejected payment's ``failure_message``)."""
        parts = [str(r.get("message") or r.get("code") or "") for r in self.reasons]
        why = "; ".join(p for p in parts if p) or "no reason given"
        return f"Risk score {self.score} ({self.decision}): {why}."

    def fields(self) -> dict[str, Any]:
        """The payment's risk columns."""
        return {
            "risk_decision": self.decision,
            "risk_score": self.score,
            "risk_assessment_id": self.id[:40],
            "risk_reasons": self.codes,
        }


class RiskRefused(Exception):
    """Risk refused the request (a 4xx other than 401/403/429): its problem ``code`` and ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status, code, detail)
        self.status, self.code, self.detail = status, code, detail

    def __str__(self) -> str:
        return f"risk refused the request ({self.status} {self.code}): {self.detail}"


class RiskFailed(Exception):
    """Risk answered 500/501, or an answer that is not one assessment per payment in order."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status, code, detail)
        self.status, self.code, self.detail = status, code, detail

    def __str__(self) -> str:
        return f"risk answered {self.status} {self.code}: {self.detail}"


class RiskItemFailed(Exception):
    """Risk refused or failed on one payment alone (the batch was split down to it): that payment's unexpected
    error, handled like one the ledger fails on (processed alone, then parked: ``services.payments.processing``)."""

    def __init__(self, code: str, detail: str, refused: bool = False) -> None:
        super().__init__(code, detail, refused)
        self.code, self.detail, self.refused = code, detail, refused

    def __str__(self) -> str:
        return f"the risk service could not assess this payment ({self.code}): {self.detail}"


def _problem(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "risk_error", response.text[:200]
    if not isinstance(body, dict):
        return "risk_error", str(body)[:200]
    detail = str(body.get("detail") or body.get("title") or "")
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        detail = f"{detail} ({first.get('pointer') or first.get('field') or ''}: {first.get('detail') or ''})"
    return str(body.get("code") or "risk_error"), detail[:500]


def _instant(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def assessment_item(payment: Payment) -> dict[str, Any]:
    """One payment as the risk service takes it (only the contract's fields: it refuses unknown ones)."""
    return {
        "payment_id": payment.id,
        "amount": payment.amount,
        "currency": payment.currency,
        "source_account": payment.source_account,
        "destination_account": payment.destination_account,
        "client_id": payment.client_id[:200],
        "created_at": _instant(payment.created_at),
    }


def _assessment(raw: Any, payment_id: str) -> Assessment | None:
    """The assessment in ``raw`` if it is one, for ``payment_id``; None otherwise."""
    if not isinstance(raw, dict) or raw.get("payment_id") != payment_id:
        return None
    score, decision, ident, reasons = raw.get("score"), raw.get("decision"), raw.get("id"), raw.get("reasons", [])
    if type(score) is not int or not 0 <= score <= 100 or decision not in DECISIONS:
        return None
    if not isinstance(ident, str) or not ident or not isinstance(reasons, list):
        return None
    if not all(isinstance(r, dict) and isinstance(r.get("code"), str) for r in reasons):
        return None
    version = raw.get("rules_version")
    return Assessment(
        id=ident,
        payment_id=payment_id,
        score=score,
        decision=decision,
        reasons=reasons,
        rules_version=version if type(version) is int else None,
    )


class Risk:
    """The calls payments makes to the risk service."""

    def __init__(self, client: ServiceClient | None = None) -> None:
        timeout = settings.PAYMENTS_RISK_TIMEOUT
        self.client = client or ServiceClient(
            base_url=settings.RISK_URL,
            audience="risk",
            credentials=default_credentials(),
            timeout=timeout,
            connect_timeout=_connect_timeout(timeout),
            retries=settings.PAYMENTS_RISK_RETRIES,
            backoff_max=BACKOFF_MAX,
            breaker=circuit_breaker_for(
                f"risk {settings.RISK_URL}", failure_threshold=RISK_CIRCUIT_FAILURES, reset_timeout=RISK_CIRCUIT_RESET
            ),
        )

    def assess_many(
        self,
        payments: Iterable[Payment],
        *,
        failures: dict[str, Exception] | None = None,
        before_call: Callable[[], None] | None = None,
        suspect: bool = False,
    ) -> dict[str, Assessment]:
        """Assess the payments in one call (per ``BATCH_MAX``): payment id → its assessment.

        A payment the risk service refused or failed on alone is left out, its error (:class:`RiskItemFailed`)
        put in ``failures``. Raises :class:`~services.kit.http.UpstreamUnavailable` when risk is away (see the
        module docstring). ``before_call`` runs before each HTTP call (a split batch makes several). ``suspect``:
        the payments are processed alone because risk failed on them before, among others it assessed — one that
        fails alone again is its own failure, not risk's."""
        items = [assessment_item(p) for p in payments]
        found: dict[str, Assessment] = {}
        for start in range(0, len(items), BATCH_MAX):
            chunk = items[start : start + BATCH_MAX]
            for payment_id, outcome in zip(
                (i["payment_id"] for i in chunk), self._batch(chunk, before_call, suspect), strict=True
            ):
                if isinstance(outcome, Assessment):
                    found[payment_id] = outcome
                elif failures is not None:
                    failures[payment_id] = outcome
        metrics.incr_many({f"risk_decisions:{d}": sum(1 for a in found.values() if a.decision == d) for d in DECISIONS})
        return found

    def _batch(
        self, items: list[dict[str, Any]], before_call: Callable[[], None] | None, suspect: bool = False
    ) -> list[Assessment | RiskItemFailed]:
        def call(part: Sequence[dict[str, Any]]) -> list[Assessment | RiskItemFailed]:
            if before_call is not None:
                before_call()
            return list(self._call(list(part)))

        def alone(item: dict[str, Any], exc: Exception) -> list[Assessment | RiskItemFailed]:
            code = getattr(exc, "code", "risk_error")
            log.error("payments.risk_item_failed", payment_id=item["payment_id"], error=str(exc)[:300])
            return [RiskItemFailed(code, str(exc)[:400], refused=isinstance(exc, RiskRefused))]

        results = batch_isolate(
            items,
            call,
            item_error=lambda exc: isinstance(exc, RiskRefused | RiskFailed),
            alone=alone,
            merge=lambda left, right: left + right,
            event="payments.risk_batch_split",
        )
        failed = [r for r in results if isinstance(r, RiskItemFailed)]
        if results and len(failed) == len(results) and (len(results) > 1 or not (failed[0].refused or suspect)):
            # Not one payment could be assessed (or the only one failed without being refused): risk is failing,
            # not an item — the payments wait (PAYMENTS_RISK_FALLBACK), none is blamed.
            raise UpstreamUnavailable(f"risk failed on every payment of the batch ({len(items)}): {results[0]}")
        return results

    def _call(self, items: list[dict[str, Any]]) -> list[Assessment]:
        """One HTTP call for ``items``; their assessments, in order."""
        ids = [i["payment_id"] for i in items]
        # The risk service is idempotent on payment_id: the call may be retried (the key lets the kit client do so).
        key = "assess-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:40]
        started = time.monotonic()
        outcome = "unavailable"
        try:
            response = self.client.post(ASSESSMENTS_PATH, json={"payments": items}, idempotency_key=key)
            assessments = self._answer(response, ids)
            outcome = "ok"
            return assessments
        except (RiskRefused, RiskFailed) as exc:
            outcome = "refused" if isinstance(exc, RiskRefused) else "failed"
            raise
        finally:
            metrics.observe_risk_call(time.monotonic() - started, outcome)

    def _answer(self, response: httpx.Response, ids: list[str]) -> list[Assessment]:
        status = response.status_code
        if not 200 <= status < 300:
            code, detail = _problem(response)
            if status in (500, 501):
                log.error("payments.risk_failed", status=status, code=code, detail=detail)
                raise RiskFailed(status, code, detail)
            if status in (401, 403, 408, 429) or status >= 500:
                # Our credentials, throttling, or risk (or its database) away: no payment's fault.
                log.warning("payments.risk_unavailable", status=status, code=code, detail=detail)
                raise UpstreamUnavailable(f"risk answered {status} {code}: {detail}")
            log.warning("payments.risk_refused", status=status, code=code, detail=detail, size=len(ids))
            raise RiskRefused(status, code, detail)
        try:
            body = response.json()
        except ValueError as exc:
            raise RiskFailed(status, "malformed_reply", f"not JSON: {response.text[:120]!r}") from exc
        raw = body.get("assessments") if isinstance(body, dict) else None
        if not isinstance(raw, list) or len(raw) != len(ids):
            raise RiskFailed(status, "malformed_reply", "the answer is not one assessment per payment")
        found = [_assessment(a, payment_id) for a, payment_id in zip(raw, ids, strict=True)]
        if any(a is None for a in found):
            raise RiskFailed(status, "malformed_reply", "an assessment is malformed or for another payment")
        return [a for a in found if a is not None]


_risk: Risk | None = None
_risk_lock = threading.Lock()


def risk() -> Risk:
    """This process's risk gateway (one HTTP connection pool, one circuit breaker)."""
    global _risk
    with _risk_lock:
        if _risk is None:
            _risk = Risk()
        return _risk


def risk_reset() -> None:
    """Forget the gateway (settings changed: tests)."""
    global _risk
    with _risk_lock:
        if _risk is not None:
            _risk.client.close()
        _risk = None
