"""Carrying payments out (Celery queue ``payments``): screening, the ledger hold, posting, settling — in batches.

A worker **claims** up to ``PAYMENTS_BATCH`` due payments at once (:func:`claim`: one ``UPDATE … WHERE id IN
(SELECT … FOR UPDATE SKIP LOCKED)`` that takes a lease on each) and carries the whole batch as far as it can
go (:func:`run`):

1. ``created → screening``: one transaction for the batch;
2. screening: one transaction that locks every source account involved, applies the rules in creation order
   and moves each payment to ``processing`` or ``rejected`` — or, with risk screening on, to ``review`` (see
   below);
3. the holds: one call to the ledger's ``/transactions/batch`` (``reference = payment id``; the same body on
   every attempt, so a retry is a replay), then one call to ``/transactions/batch/settle`` posting them;
4. ``processing → settled`` / ``failed``: one transaction per outcome;
5. holds of payments that ended without settling: one ``…/batch/settle`` voiding them.

Every status change writes, in its transaction, the ``payment.<status>`` domain event and the audit event of
every payment it moves (:func:`services.payments.services.transition_many`), and is a compare-and-set: a
payment canceled meanwhile is left as it is. Those events carry the request id each payment was created with
(the batch job's id beside it, as ``task_id``), and the job reports the requests, payments and ledger
transactions it carried (:func:`services.kit.carry.carried`): one request id finds its payment's every step and
the drain that took it.

It is safe to run any number of times, at any moment, in any number of workers at once — which is what late
acknowledgement, redelivery after a worker is killed, and the sweeper amount to: a lease left by a killed
worker expires and is taken over; a hold that exists is found again, a posted hold is reported posted again, so
a run that dies after the ledger answered but before the payments were saved is finished by the next run, never
done twice.

**Leases.** A claim leases its payments for ``PAYMENTS_LEASE_SECONDS`` (15 s) under an owner token of its own,
``lease_owner`` = ``node:pid:random`` (the worker's host — a pod's name — and process, shown in the admin; the
random part makes every claim's token unique). Leases are timed by the database's clock. The run keeps them
(:class:`Lease`): before each step, and before each call to the ledger, it renews them — one ``UPDATE`` for the
batch, compare-and-set on the owner — when what is left of them might not cover the longest step, one ledger
call with all its tries (:func:`services.payments.ledger.call_seconds`, bounded below the lease by the system
check ``payments.E003``). So a live worker never loses a lease in the middle of a call, and on the hot path (a
batch takes a fraction of a second) no renewal is sent at all. A worker that finds a lease taken over (it
stalled past it) drops those payments from the run, and every write it makes is compare-and-set on the owner
too (:func:`services.payments.services.transition_many`, :func:`services.payments.queries.rows_write`, the
release): it never touches them again, the new owner carries them. A killed worker's leases simply run out, at
most ``PAYMENTS_LEASE_SECONDS`` after the kill: the next drain's claim takes them at once (its claims take
expired leases first: oldest change first), and when nothing else runs the sweeper (beat, every 5 s) takes
every expired lease without waiting for ``PAYMENTS_STALE_SECONDS``. A lease is released (both columns cleared)
when its run ends, so an expired one always means a worker that died or stalled.

**Risk screening** (``RISK_URL`` set; empty, screening is the admin's rules alone, exactly as before). The risk
service is asked about the batch's payments in **one** call (:meth:`services.payments.risk.Risk.assess_many`)
*before* the screening transaction, never inside it: an HTTP call that may take seconds (timeouts, retries) must
not hold the per-account advisory locks and row locks that every other batch from those accounts waits for. So the
step runs in two parts: first, without locks, the admin's rules are read and applied to find the payments that
pass them (only those are sent to risk: a payment the rules reject is never counted in risk's velocity), and risk
is asked about them; then the usual transaction locks the accounts, applies the rules again — authoritatively —
and the risk decisions to those that pass: ``allow`` → ``processing``, ``review`` → ``review`` (it waits for an
operator: :func:`services.payments.services.payment_review_decide`), ``deny`` → ``rejected`` (``risk_denied``,
the reasons in ``failure_message``). A payment whose outcome under the locks differs from the first read (a rule
edited meanwhile) is not decided without risk: it stays in screening and is asked about in the next run. Splitting
the step into two transactions instead (rules, then risk, then verdicts) would leave payments that passed the
rules uncounted by the velocity rules between the two, or need a status of their own; reading the rules twice
costs a few grouped queries. When risk cannot be reached (``UpstreamUnavailable``, its circuit open, 5xx, 401/403,
429, a timeout), ``PAYMENTS_RISK_FALLBACK`` decides for the payments that pass the rules: ``hold`` keeps them in
``screening`` with ``next_attempt_at`` set (backoff capped at ``RISK_HOLD_MAX_SECONDS``; the attempts are counted
for the backoff but never run out, and reset when the payment moves on), so they are retried when risk returns —
the breaker lets a trial call through ``RISK_CIRCUIT_RESET`` seconds after opening, so no payment waits on it
longer than its own backoff; ``allow`` lets them on (``risk_decision`` blank); ``deny`` rejects them
(``risk_unavailable``). A payment risk refuses or fails on alone (its batch split down to it) is an unexpected
error of that payment, handled like a ledger item failure (processed alone, then parked).

While the ledger is unreachable the payments stay ``processing`` with ``next_attempt_at`` set (exponential
backoff with full jitter; claims skip them until then) up to ``PAYMENTS_MAX_ATTEMPTS`` attempts, after which
they fail with ``retries_exhausted``. A drain that leaves payments waiting schedules the drain that will
retry them.

:func:`drain` is what the ``payments.drain`` task runs: claim and run batches until nothing is due, in at most
``PAYMENTS_DRAINERS`` workers at once. New payments wake it (:func:`services.payments.services.kick`, one
message per ``PAYMENTS_KICK_DELAY`` per web process, not one per payment). :func:`sweep` (beat, every 5 s)
claims and runs payments whose lease ran out, and those untouched for ``PAYMENTS_STALE_SECONDS`` whose work was
lost. :func:`advance` runs one payment (the ``payments.process`` task, and tests).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from services.kit.batches import batch_isolate
from services.kit.carry import carried
from services.kit.db import database_transient
from services.kit.db import execute as db_execute
from services.kit.http import UpstreamUnavailable
from services.kit.logs import get_logger
from services.kit.telemetry import batch_links_add, telemetry_enabled
from services.payments import metrics, queries, risk, services
from services.payments.ledger import HOLD_LIFETIME, PROCESSING_ERROR, Ledger, call_seconds, ledger
from services.payments.models import HoldStatus, Payment, PaymentStatus
from services.payments.screening import accounts_lock, screen_many

log = get_logger(__name__)

OPEN = (PaymentStatus.CREATED, PaymentStatus.SCREENING, PaymentStatus.PROCESSING)
LEASE_MARGIN = 1.0  # seconds of a lease kept in hand beyond the longest step (statements, scheduling)
RISK_HOLD_MAX_SECONDS = 30.0  # the longest a payment held in screening (risk away) waits before it is tried again
_NODE = socket.gethostname()[:80]


def _payment_error(exc: Exception) -> bool:
    """Whether ``exc`` may be a payment's fault: not the ledger or the database being away or busy
    (:func:`services.kit.db.database_transient`), which ends the batch for a later retry — splitting it because of
    that would blame innocent payments."""
    return not isinstance(exc, UpstreamUnavailable) and not database_transient(exc)


@dataclass
class Outcome:
    """What :func:`advance` did to one payment: the status it left it in, or that it had to wait."""

    status: str
    retry_in: float | None = None  # the ledger was unavailable, or an unexpected error: run again after this long
    busy: bool = False  # another worker holds the lease
    error: str = ""  # the unexpected error this run met ("Type: message")
    parked: bool = False  # ... and it was the last one allowed: the payment was parked


@dataclass
class BatchResult:
    """What :func:`run` did: each claimed payment's status after it, and which ones wait for the ledger."""

    statuses: dict[str, str] = field(default_factory=dict)
    waits: dict[str, float] = field(default_factory=dict)  # payment id → seconds until its retry
    changed: int = 0  # payments whose status or hold changed
    # Payments that met an unexpected error alone, → seconds until ``payments.process`` tries them again alone.
    suspects: dict[str, float] = field(default_factory=dict)
    # Payments the ledger failed on within a run that went on for the others (the gateway isolated them).
    item_errors: dict[str, Exception] = field(default_factory=dict)


def backoff(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: full jitter over an exponentially growing cap."""
    cap = min(settings.PAYMENTS_RETRY_MAX_SECONDS, settings.PAYMENTS_RETRY_BASE_SECONDS * 2 ** min(attempt, 30))
    return max(0.05, random.uniform(cap / 2, cap))  # noqa: S311  (jitter, not cryptography)


def lease_owner_new() -> str:
    """A new claim's owner token: ``node:pid:random``."""
    return f"{_NODE}:{os.getpid()}:{secrets.token_hex(4)}"


def lease_renew_after() -> float:
    """Seconds after a lease was set past which a step may not start without renewing it: what is left must
    cover the longest step (one ledger call, all its tries) and the margin."""
    return settings.PAYMENTS_LEASE_SECONDS - max(call_seconds(), risk.call_seconds()) - LEASE_MARGIN


class Claim(list[str]):
    """The ids of the payments one claim leased (a list, as callers use it), with the owner token holding their
    leases and when they were set."""

    def __init__(self, ids: Iterable[str] = (), *, owner: str = "", leased_at: float = 0.0) -> None:
        # (defaults: code that copies a list as ``type(value)(items)`` — Django's lookups — makes one without an
        # owner, which run() never takes for a claim)
        super().__init__(ids)
        self.owner = owner
        self.leased_at = leased_at  # time.monotonic() just before the claim was sent: the leases end after that


class Lease:
    """A claim's leases while a run carries its payments: kept between the steps, lost ones dropped (see the
    module docstring)."""

    def __init__(self, claimed: Claim) -> None:
        self.owner = claimed.owner
        self.claimed = list(claimed)
        self.held = set(claimed)
        self.since = claimed.leased_at

    def keep(self) -> None:
        """Before a step: renew the leases if what is left of them might not cover it."""
        if self.held and time.monotonic() - self.since > lease_renew_after():
            self.renew()

    def renew(self) -> set[str]:
        """Extend the leases this claim still holds (one statement); drop and return the ones taken over."""
        started = time.monotonic()
        rows = db_execute(queries.LEASE_RENEW_SQL, [settings.PAYMENTS_LEASE_SECONDS, sorted(self.held), self.owner])
        kept = {row[0] for row in rows}
        lost = self.held - kept
        self.held, self.since = kept, started
        if lost:
            log.warning("payments.lease_lost", owner=self.owner, count=len(lost), payment_ids=sorted(lost)[:20])
            metrics.incr("leases_lost", len(lost))
        return lost

    def holding(self, payments: Iterable[Payment]) -> list[Payment]:
        """Those of ``payments`` whose lease this claim still holds."""
        return [p for p in payments if p.id in self.held]

    def release(self) -> None:
        """Let go of the leases (those still this claim's: one taken over is the new owner's)."""
        _lease_release(self.claimed, self.owner)


def claim(*, limit: int | None = None, ids: list[str] | None = None, stale_before: dt.datetime | None = None) -> Claim:
    """Lease up to ``limit`` payments with work to do that nobody holds (or whose lease ran out), oldest change
    first, under a new owner token; return their ids (a :class:`Claim`).

    By default only payments whose retry is due; with ``ids``, those payments whatever their retry time;
    with ``stale_before``, only payments untouched since then — or whose lease ran out (the sweeper).
    """
    owner = lease_owner_new()
    params: dict[str, Any] = {
        "now": timezone.now(),
        "lease": settings.PAYMENTS_LEASE_SECONDS,
        "owner": owner,
        "limit": limit or settings.PAYMENTS_BATCH,
    }
    extra = ""
    if ids is not None:
        extra += " AND id = ANY(%(ids)s::text[])"
        params["ids"] = list(ids)
    else:
        extra += " AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)"
        if stale_before is None:
            # A payment that met an unexpected error is processed alone, by payments.process (see run()).
            extra += " AND processing_errors = 0"
    if stale_before is not None:
        # (a lease is released when its run ends: one left to run out is a worker that died or stalled)
        extra += " AND (updated_at < %(stale)s OR lease_until IS NOT NULL)"
        params["stale"] = stale_before
    leased_at = time.monotonic()
    rows = db_execute(queries.CLAIM_SQL.replace("{extra}", extra), params)
    return Claim((row[0] for row in rows), owner=owner, leased_at=leased_at)


def _lease_release(ids: list[str], owner: str) -> None:
    if ids:
        db_execute(queries.LEASE_RELEASE_SQL, [list(ids), owner])


def run(ids: list[str]) -> BatchResult:
    """Take the claimed payments ``ids`` (a :class:`Claim`; other ids are claimed first, and those another worker
    holds are left out) as far as they can go now (see the module docstring), keeping their leases; release the
    leases at the end, whatever happens.

    One payment never stops the others: an unexpected error (not a refusal, which fails its payment alone, and
    not an unavailable ledger or database, which ends the batch for a later retry) splits the batch in halves
    until the payment that raises is alone. That payment is counted a processing error and handed to
    ``payments.process``, which tries it alone with backoff and parks it at ``PAYMENTS_PROCESSING_ATTEMPTS``
    (:func:`advance`); the rest go on.
    """
    claimed = ids if isinstance(ids, Claim) and ids.owner else claim(ids=list(ids), limit=max(1, len(ids)))
    lease = Lease(claimed)
    result = BatchResult()
    if telemetry_enabled():
        _batch_link(claimed)
    try:
        _run_isolating(claimed, lease, result)
    finally:
        lease.release()
    for payment_id, delay in result.suspects.items():
        services.process_send(payment_id, countdown=delay)
    return result


def _batch_link(ids: list[str]) -> None:
    """OpenTelemetry: the span running this batch (the drain's) links to the context each payment was created in
    and lists their request ids (:func:`services.kit.telemetry.batch_links_add`)."""
    rows = Payment.objects.filter(id__in=ids).values_list("id", "trace_parent", "request_id")
    batch_links_add((payment_id, parent, request_id) for payment_id, parent, request_id in rows)


def _run_isolating(ids: list[str], lease: Lease, result: BatchResult) -> None:
    """:func:`_run`, isolating a poisoned payment (:func:`services.kit.batches.batch_isolate`)."""

    def alone(payment_id: str, exc: Exception) -> None:
        if payment_id not in lease.held:
            return  # another worker carries it now
        outcome = _processing_error(payment_id, exc, may_park=False)
        result.suspects[payment_id] = outcome.retry_in or 0.0
        result.statuses[payment_id] = outcome.status
        result.changed += 1

    batch_isolate(
        ids,
        lambda part: _run(list(part), lease, result),
        item_error=_payment_error,
        alone=alone,
        merge=lambda left, right: None,
        event="payments.batch_split",
    )
    for payment_id, exc in result.item_errors.items():
        # (a payment a later part of the split carried on — e.g. settled — is no longer a suspect)
        if payment_id not in result.suspects and result.statuses.get(payment_id, PaymentStatus.PROCESSING) in OPEN:
            alone(payment_id, exc)


def _run(ids: list[str], lease: Lease, result: BatchResult) -> None:
    """The work of :func:`run` for ``ids``, without isolation; ``lease`` kept before each step, and every write
    compare-and-set on it."""
    lease.keep()
    payments = {p.id: p for p in Payment.objects.filter(id__in=[i for i in ids if i in lease.held])}
    before = {p.id: (str(p.status), str(p.hold_status)) for p in payments.values()}

    created = [p.id for p in payments.values() if p.status == PaymentStatus.CREATED]
    services.transition_many(
        {i: {} for i in created}, [PaymentStatus.CREATED], PaymentStatus.SCREENING, known=payments, owner=lease.owner
    )
    lease.keep()
    _screen(lease.holding(p for p in payments.values() if p.status == PaymentStatus.SCREENING), payments, lease, result)
    processing = [p for p in payments.values() if p.status == PaymentStatus.PROCESSING]
    if processing:
        _process(processing, payments, result, lease)
    releasing = [
        p
        for p in payments.values()
        if p.status not in OPEN and p.status != PaymentStatus.SETTLED and p.hold_status == HoldStatus.PENDING
    ]
    if releasing:
        _release_holds(releasing, result, lease)
    for payment in payments.values():
        result.statuses[payment.id] = str(payment.status)
        if before.get(payment.id) != (str(payment.status), str(payment.hold_status)):
            result.changed += 1
    # The job links to what it carried: each payment's request and the payment and ledger transaction ids.
    carried(
        request_ids=[p.request_id for p in payments.values()],
        object_ids=[i for p in payments.values() for i in (p.id, p.ledger_transaction) if i],
    )


def _screen(screening: list[Payment], payments: dict[str, Payment], lease: Lease, result: BatchResult) -> None:
    """Screening and its verdicts in one transaction, holding a lock per source account (in order); with risk
    screening on, the risk service's decisions, asked for beforehand in one call (see the module docstring)."""
    if not screening:
        return
    asked = _risk_ask(screening, lease, result) if risk.enabled() else None
    with transaction.atomic():
        rows = db_execute(queries.LOCK_SQL, [sorted(p.id for p in screening)])
        locked = [
            payments[i]
            for i, status, owner in rows
            if status == PaymentStatus.SCREENING == str(payments[i].status)
            and owner == lease.owner
            and i not in result.item_errors
        ]
        if not locked:
            return
        accounts_lock(p.source_account for p in locked)
        verdicts = screen_many(locked)
        passed = {p.id: {} for p in locked if verdicts[p.id].passed}
        rejected = {
            p.id: {"failure_code": verdicts[p.id].code, "failure_message": verdicts[p.id].message[:500]}
            for p in locked
            if not verdicts[p.id].passed
        }
        review: dict[str, dict[str, Any]] = {}
        fell_back: dict[str, int] = {}
        if asked is not None:
            passed, review, fell_back = _risk_verdicts(passed, rejected, asked, payments, result, lease)
        services.transition_many(
            passed, [PaymentStatus.SCREENING], PaymentStatus.PROCESSING, known=payments, owner=lease.owner
        )
        services.transition_many(
            review, [PaymentStatus.SCREENING], PaymentStatus.REVIEW, known=payments, owner=lease.owner
        )
        services.transition_many(
            rejected, [PaymentStatus.SCREENING], PaymentStatus.REJECTED, known=payments, owner=lease.owner
        )
    if rejected:
        log.info("payments.rejected", count=len(rejected), codes=sorted({c["failure_code"] for c in rejected.values()}))
    if review:
        log.info("payments.review", count=len(review))
    metrics.incr_many({f"risk_fallbacks:{name}": n for name, n in fell_back.items()})  # (after the locks: Redis)


@dataclass
class _Asked:
    """What the risk service answered for a screening batch, asked outside the screening transaction."""

    assessments: dict[str, risk.Assessment] = field(default_factory=dict)
    unavailable: Exception | None = None  # risk could not be asked (UpstreamUnavailable): the fallback applies
    sent: set[str] = field(default_factory=set)  # the payments it was asked about


def _risk_ask(screening: list[Payment], lease: Lease, result: BatchResult) -> _Asked:
    """Ask the risk service about the batch's payments that pass the admin's rules, in one call, before the
    screening transaction (never while holding its locks). Which pass is read here without locks: the rules are
    applied again, authoritatively, under the locks (:func:`_risk_verdicts` handles a payment whose outcome
    differs). A payment the risk service failed on alone is handed back as an item error (processed alone)."""
    lease.keep()
    screening = lease.holding(screening)
    verdicts = screen_many(screening)
    # (in creation order, as the rules take them: risk counts velocity in the order it is told)
    candidates = sorted((p for p in screening if verdicts[p.id].passed), key=lambda p: (p.created_at, p.id))
    asked = _Asked(sent={p.id for p in candidates})
    if not candidates:
        return asked
    failures: dict[str, Exception] = {}
    try:
        asked.assessments = risk.risk().assess_many(
            candidates,
            failures=failures,
            before_call=lease.keep,
            suspect=all(p.processing_errors for p in candidates),  # payments.process: one risk failed on before
        )
    except UpstreamUnavailable as exc:
        asked.unavailable = exc
        log.warning("payments.risk_unavailable", count=len(candidates), error=str(exc)[:300])
    result.item_errors.update(failures)
    lease.keep()  # (a long call: what is left of the lease must cover the screening transaction)
    return asked


def _risk_verdicts(
    passed: dict[str, dict[str, Any]],
    rejected: dict[str, dict[str, Any]],
    asked: _Asked,
    payments: dict[str, Payment],
    result: BatchResult,
    lease: Lease,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, int]]:
    """The risk decisions on the payments that passed the admin's rules (under the screening locks): ``allow`` →
    processing, ``review`` → review, ``deny`` → rejected (``risk_denied``, added to ``rejected``). Without an
    answer (risk away), ``PAYMENTS_RISK_FALLBACK``: ``hold`` keeps them in screening with a capped backoff that
    never runs out of attempts, ``allow`` lets them on, ``deny`` rejects them (``risk_unavailable``). Return the
    payments going to processing, those going to review, and how many payments each fallback took."""
    onward: dict[str, dict[str, Any]] = {}
    review: dict[str, dict[str, Any]] = {}
    held: list[Payment] = []
    again: list[Payment] = []
    fallback = settings.PAYMENTS_RISK_FALLBACK
    fresh = {"attempts": 0, "next_attempt_at": None}  # attempts counted while held are screening's, not the ledger's
    for payment_id in passed:
        assessment = asked.assessments.get(payment_id)
        if assessment is not None:
            fields = {**fresh, **assessment.fields()}
            if assessment.decision == "deny":
                rejected[payment_id] = {
                    **fields,
                    "failure_code": "risk_denied",
                    "failure_message": assessment.explain()[:500],
                }
            elif assessment.decision == "review":
                review[payment_id] = fields
            else:
                onward[payment_id] = fields
        elif payment_id not in asked.sent:
            # It failed the rules when risk was asked and passes them now (a rule changed meanwhile): asked next time.
            again.append(payments[payment_id])
        elif fallback == "allow":
            onward[payment_id] = dict(fresh)
        elif fallback == "deny":
            rejected[payment_id] = {
                **fresh,
                "failure_code": "risk_unavailable",
                "failure_message": f"The risk service could not be reached: {asked.unavailable}"[:500],
            }
        else:
            held.append(payments[payment_id])
    fell_back = {"hold": len(held), "allow": 0, "deny": 0}
    if fallback in ("allow", "deny"):
        fell_back[fallback] = sum(1 for i in passed if i in asked.sent and i not in asked.assessments)
    _risk_hold(held, again, result, lease)
    return onward, review, fell_back


def _risk_hold(held: list[Payment], again: list[Payment], result: BatchResult, lease: Lease) -> None:
    """Keep the payments in screening and set when they are tried again (in the screening transaction): ``held``
    (risk away) after a backoff that grows with their attempts up to ``RISK_HOLD_MAX_SECONDS`` — attempts never
    run out here, a held payment is never lost — and ``again`` (not asked yet) at once."""
    now = timezone.now()
    for payment in held:
        delay = min(backoff(payment.attempts), RISK_HOLD_MAX_SECONDS)
        payment.attempts, payment.next_attempt_at, payment.updated_at = (
            payment.attempts + 1,
            now + dt.timedelta(seconds=delay),
            now,
        )
        result.waits[payment.id] = delay
    for payment in again:
        payment.next_attempt_at, payment.updated_at = now, now
        result.waits[payment.id] = 0.0
    written = set(queries.rows_write([*held, *again], owner=lease.owner))
    for payment in (*held, *again):
        if payment.id not in written:
            result.waits.pop(payment.id, None)
    if held:
        log.warning(
            "payments.risk_hold",
            count=len(held),
            retry_in=round(min(result.waits.get(p.id, 0.0) for p in held), 2),
        )


def _hold_args(payment: Payment) -> dict[str, Any]:
    return {
        "reference": payment.id,
        "amount": payment.amount,
        "currency": payment.currency,
        "source": payment.source_account,
        "destination": payment.destination_account,
        "expires_at": services.hold_expiry(payment),
        "description": f"payment {payment.id}",
        "request_id": payment.request_id,
    }


def hold_body(payment: Payment) -> dict[str, Any]:
    """The payment's hold as the ledger receives it: the same on every attempt (a retry is a replay)."""
    return Ledger.hold_body(**_hold_args(payment))


def hold_place(payment: Payment) -> dict[str, Any]:
    """Ask the ledger for one payment's hold in a call of its own (the batch path is :func:`run`)."""
    return ledger().hold(**_hold_args(payment))


class LedgerItemFailed(Exception):
    """The ledger failed on one payment's item (a 500 or a malformed answer, isolated by the gateway, or its own
    ``processing_error``): an unexpected error of that payment, not a refusal."""

    def __init__(self, item: dict[str, Any]) -> None:
        code, detail = str(item.get("code") or PROCESSING_ERROR), str(item.get("detail") or "")[:400]
        super().__init__(code, detail)
        self.code, self.detail = code, detail

    def __str__(self) -> str:
        return f"the ledger failed on this item ({self.code}): {self.detail}"


def _unexpected(item: dict[str, Any]) -> bool:
    """An item result that is the ledger failing on the item rather than refusing it."""
    return bool(item.get("unexpected")) or item.get("code") == PROCESSING_ERROR


def _refusal(item: dict[str, Any]) -> dict[str, Any]:
    code = str(item.get("code") or "ledger_error")
    return {"failure_code": code, "failure_message": (str(item.get("detail") or "") or code)[:500]}


def _process(processing: list[Payment], payments: dict[str, Payment], result: BatchResult, lease: Lease) -> None:
    """Holds, postings and the final transitions of the batch's ``processing`` payments."""
    gateway = ledger()
    lease.keep()
    processing = lease.holding(processing)
    by_id = {p.id: p for p in processing}
    failed: dict[str, dict[str, Any]] = {}
    settled: list[Payment] = []
    waiting: list[Payment] = []
    unavailable: Exception | None = None
    # Payments the ledger failed on (not refused): left processing, handed back as item errors (see run()).
    stuck: list[Payment] = []
    try:
        need_hold = [p for p in processing if p.hold_status == HoldStatus.NONE or not p.ledger_transaction]
        if need_hold:
            items = gateway.holds([hold_body(p) for p in need_hold], before_call=lease.keep)
            for payment, item in zip(need_hold, items, strict=True):
                if item["status"] in ("created", "exists"):
                    payment.ledger_transaction, payment.hold_status = item["id"], HoldStatus.PENDING
                elif _unexpected(item):
                    stuck.append(payment)
                    result.item_errors[payment.id] = LedgerItemFailed(item)
                else:
                    failed[payment.id] = _refusal(item)
        lease.keep()
        processing = lease.holding(processing)  # (a worker that stalled past its lease stops here)
        to_post = [
            p
            for p in processing
            if p.id not in failed and p.id not in result.item_errors and p.hold_status == HoldStatus.PENDING
        ]
        # A hold seen posted earlier (its payment was saved before the run died) needs no call.
        settled.extend(p for p in processing if p.id not in failed and p.hold_status == HoldStatus.POSTED)
        if to_post:
            items = gateway.settle_many(
                [p.ledger_transaction for p in to_post],
                post=True,
                request_ids=[p.request_id for p in to_post],
                before_call=lease.keep,
            )
            for payment, item in zip(to_post, items, strict=True):
                if _unexpected(item):
                    stuck.append(payment)  # its hold is pending: kept on the payment below, so a park voids it
                    result.item_errors[payment.id] = LedgerItemFailed(item)
                elif item["status"] == "posted":
                    payment.hold_status = HoldStatus.POSTED
                    settled.append(payment)
                elif item.get("code") == "transaction_not_pending":
                    # Not posted and not pending: voided (expired, or by an operator) before it was posted.
                    payment.hold_status = HoldStatus.VOIDED
                    failed[payment.id] = {
                        "failure_code": "hold_voided",
                        "failure_message": "The ledger hold was voided (expired) before it was posted.",
                    }
                else:  # a frozen or closed account: the hold stays pending until it is voided below
                    failed[payment.id] = _refusal(item)
        voided = [p for p in processing if p.id not in failed and p.hold_status == HoldStatus.VOIDED]
        for payment in voided:
            failed[payment.id] = {
                "failure_code": "hold_voided",
                "failure_message": "The ledger hold was voided (expired) before it was posted.",
            }
    except UpstreamUnavailable as exc:
        unavailable = exc
        decided = {p.id for p in settled} | set(failed) | set(result.item_errors)
        waiting = [p for p in processing if p.id not in decided]

    # leased and processing: what the ledger did for them (a pending hold) is kept
    queries.rows_write(stuck, owner=lease.owner)
    services.transition_many(
        {
            p.id: {
                "hold_status": HoldStatus.POSTED,
                "ledger_transaction": p.ledger_transaction,
                "next_attempt_at": None,
            }
            for p in settled
        },
        [PaymentStatus.PROCESSING],
        PaymentStatus.SETTLED,
        known=payments,
        owner=lease.owner,
    )
    services.transition_many(
        {
            payment_id: {
                **fields,
                "hold_status": by_id[payment_id].hold_status,
                "ledger_transaction": by_id[payment_id].ledger_transaction,
                "next_attempt_at": None,
            }
            for payment_id, fields in failed.items()
        },
        [PaymentStatus.PROCESSING],
        PaymentStatus.FAILED,
        known=payments,
        owner=lease.owner,
    )
    if failed:
        log.info("payments.failed", count=len(failed), codes=sorted({f["failure_code"] for f in failed.values()}))
    if waiting:
        assert unavailable is not None
        _wait(waiting, unavailable, payments, result, lease)


def _wait(
    waiting: list[Payment], exc: Exception, payments: dict[str, Payment], result: BatchResult, lease: Lease
) -> None:
    """The ledger is unavailable: count the attempt and set when to retry, or fail those out of attempts."""
    now = timezone.now()
    exhausted: dict[str, dict[str, Any]] = {}
    later: list[Payment] = []
    for payment in waiting:
        attempts = payment.attempts + 1
        if attempts >= settings.PAYMENTS_MAX_ATTEMPTS:
            exhausted[payment.id] = {
                "failure_code": "retries_exhausted",
                "failure_message": f"The ledger stayed unavailable for {attempts} attempts: {exc}"[:500],
                "attempts": attempts,
                "next_attempt_at": None,
                "hold_status": payment.hold_status,
                "ledger_transaction": payment.ledger_transaction,
            }
            continue
        delay = backoff(attempts - 1)
        payment.attempts, payment.next_attempt_at, payment.updated_at = (
            attempts,
            now + dt.timedelta(seconds=delay),
            now,
        )
        result.waits[payment.id] = delay
        later.append(payment)
    # leased and processing (not cancelable): nobody else writes them meanwhile — unless the lease was taken over
    written = set(queries.rows_write(later, owner=lease.owner))
    for payment in later:
        if payment.id not in written:
            result.waits.pop(payment.id, None)  # the new owner decides when it is tried again
    later = [p for p in later if p.id in written]
    services.transition_many(
        exhausted, [PaymentStatus.PROCESSING], PaymentStatus.FAILED, known=payments, owner=lease.owner
    )
    if exhausted:
        log.warning("payments.retries_exhausted", count=len(exhausted))
    if later:
        log.warning(
            "payments.ledger_unavailable",
            count=len(later),
            retry_in=round(min(result.waits[p.id] for p in later), 2),
            error=str(exc),
        )


def _release_holds(releasing: list[Payment], result: BatchResult, lease: Lease | None) -> None:
    """Void the holds of payments that ended without settling (one call); wait and retry if the ledger is away.
    With ``lease`` (a batch's), only those whose lease it still holds, and their rows compare-and-set on it."""
    if lease is not None:
        lease.keep()
        releasing = lease.holding(releasing)
        if not releasing:
            return
    try:
        items = ledger().settle_many(
            [p.ledger_transaction for p in releasing],
            post=False,
            request_ids=[p.request_id for p in releasing],
            before_call=lease.keep if lease is not None else None,
        )
    except UpstreamUnavailable as exc:
        now = timezone.now()
        for payment in releasing:
            delay = backoff(payment.attempts)
            payment.attempts += 1
            payment.next_attempt_at = now + dt.timedelta(seconds=delay)
            result.waits[payment.id] = delay
        log.warning("payments.hold_release_waiting", count=len(releasing), error=str(exc))
    else:
        now = timezone.now()
        for payment, item in zip(releasing, items, strict=True):
            if item["status"] == "voided":
                payment.hold_status = HoldStatus.VOIDED
            elif item.get("code") == "transaction_not_pending":
                # Posted: money moved for a payment that did not settle. Reconciliation reports it; nothing
                # here may undo a posting.
                log.error("payments.hold_release_refused", payment_id=payment.id, code=item.get("code"))
                payment.hold_status = HoldStatus.POSTED
            else:
                log.error("payments.hold_release_refused", payment_id=payment.id, code=item.get("code"))
                payment.hold_status = HoldStatus.NONE
            payment.updated_at = now
    queries.rows_write(releasing, owner=lease.owner if lease is not None else None)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:400]


def _processing_error(payment_id: str, exc: Exception, *, may_park: bool) -> Outcome:
    """Count an unexpected error met by ``payment_id`` processed alone. At ``PAYMENTS_PROCESSING_ATTEMPTS``
    (when ``may_park``) the payment is parked; before that it waits a backoff (claims by the drains skip it from
    now on: ``payments.process`` tries it alone)."""
    error = _describe(exc)
    log.error("payments.processing_error", payment_id=payment_id, error=error, exc_info=exc)
    metrics.incr("processing_errors")
    rows = db_execute(queries.PROCESSING_ERROR_COUNT_SQL, [payment_id])
    if not rows:
        return Outcome("missing", error=error)
    errors, status = rows[0]
    if may_park and errors >= settings.PAYMENTS_PROCESSING_ATTEMPTS:
        return Outcome(_park(payment_id, error, errors), error=error, parked=True)
    delay = backoff(errors - 1)
    db_execute(queries.RETRY_AT_SQL, [timezone.now() + dt.timedelta(seconds=delay), payment_id])
    return Outcome(status, retry_in=delay, error=error)


def _park(payment_id: str, error: str, errors: int) -> str:
    """Give up on a payment that keeps meeting unexpected errors: ``failed`` with ``processing_error`` (audited:
    its ``payments.payment.failed`` event names the code and the error), its hold voided; return its status.

    The park must not depend on what poisoned the payment: if the usual transition cannot be written, a
    minimal one is (:func:`services.payment_park_raw`). If the hold cannot be voided now, the sweeper, the
    reconciliation and at last the ledger's own expiry void it.
    """
    fields = {
        "failure_code": PROCESSING_ERROR,
        "failure_message": f"Parked after {errors} unexpected errors; the last: {error}"[:500],
        "processing_errors": errors,
        "next_attempt_at": None,
    }
    try:
        moved = bool(services.transition_many({payment_id: fields}, OPEN, PaymentStatus.FAILED))
    except Exception as exc:
        if not _payment_error(exc):
            raise
        log.exception("payments.park_fallback", payment_id=payment_id)
        moved = services.payment_park_raw(payment_id=payment_id, **fields)
    if moved:
        metrics.incr("parked")
        log.error("payments.parked", payment_id=payment_id, errors=errors, error=error)
    _hold_release_now(payment_id)
    return Payment.objects.filter(id=payment_id).values_list("status", flat=True).first() or "missing"


def _hold_release_now(payment_id: str) -> None:
    """Void the hold of a payment that ended without settling, in a call of its own. If that is impossible
    (the ledger away: the sweeper retries; an unexpected error again: the hold is left to reconciliation and
    the ledger's expiry, and the payment's claims stop until then)."""
    try:
        payment = Payment.objects.filter(id=payment_id).first()
        if payment is None or payment.status in OPEN or payment.status == PaymentStatus.SETTLED:
            return
        if payment.hold_status == HoldStatus.NONE:
            # A run that died between the ledger's answer and saving the payment leaves a hold the payment does not
            # know of: the ledger is asked (the hold's reference is the payment id).
            hold = ledger().by_reference(payment.id)
            if hold is None or hold.get("status") != "pending":
                return
            payment.ledger_transaction, payment.hold_status = hold["id"], HoldStatus.PENDING
        if payment.hold_status == HoldStatus.PENDING:
            _release_holds([payment], BatchResult(), None)
    except Exception as exc:
        if not _payment_error(exc):
            raise
        log.exception("payments.hold_release_failed", payment_id=payment_id)
        db_execute(queries.HOLD_RETRY_AT_SQL, [HOLD_LIFETIME, payment_id])


def advance(payment_id: str) -> Outcome:
    """Take one payment as far as it can go now, whatever its retry time (the ``payments.process`` task).

    An unexpected error is counted on the payment (:func:`_processing_error`): the outcome says when to try
    again, or that the payment was parked."""
    claimed = claim(ids=[payment_id], limit=1)
    if not claimed:
        current = Payment.objects.filter(id=payment_id).values_list("status", flat=True).first()
        return Outcome(current or "missing", busy=current in OPEN)
    lease = Lease(claimed)
    result = BatchResult()
    try:
        try:
            _run(claimed, lease, result)
        except Exception as exc:
            if not _payment_error(exc):
                raise
            return _processing_error(payment_id, exc, may_park=True)
        if payment_id in result.item_errors:
            return _processing_error(payment_id, result.item_errors[payment_id], may_park=True)
    finally:
        lease.release()
    status = result.statuses.get(payment_id) or "missing"
    return Outcome(status, retry_in=result.waits.get(payment_id) if status in OPEN else None)


def _slot_take() -> int | None:
    """One of ``PAYMENTS_DRAINERS`` session advisory locks, or None if every slot is taken."""
    with connection.cursor() as cursor:
        for slot in range(settings.PAYMENTS_DRAINERS):
            cursor.execute(queries.SLOT_TAKE_SQL, [queries.DRAIN_LOCK, slot])
            if cursor.fetchone()[0]:
                return slot
    return None


def _slot_release(slot: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(queries.SLOT_RELEASE_SQL, [queries.DRAIN_LOCK, slot])


def next_due() -> dt.datetime | None:
    """When the earliest waiting payment's retry is due (None if nothing waits)."""
    with connection.cursor() as cursor:
        cursor.execute(queries.NEXT_DUE_SQL)
        return cursor.fetchone()[0]


def drain(*, seconds: float | None = None) -> dict[str, Any]:
    """Claim and run batches until nothing is due (or ``seconds`` pass); the ``payments.drain`` task.

    At most ``PAYMENTS_DRAINERS`` drains work at once (session advisory locks); a drain that finds every slot
    taken returns at once, since the running ones claim until nothing is due. After letting go of its slot a
    drain claims once more: a payment committed just before, whose kick found the slots taken (or was not sent
    because a drain was running, see :func:`services.payments.queries.drain_running`), is not left for the
    sweeper. When payments wait for the ledger, a drain is scheduled for the earliest retry.
    """
    budget = settings.PAYMENTS_DRAIN_SECONDS if seconds is None else seconds
    gather = settings.PAYMENTS_DRAIN_GATHER
    deadline = time.monotonic() + budget
    counts = {"batches": 0, "payments": 0, "settled": 0}
    more = False

    def one(ids: list[str]) -> BatchResult:
        result = run(ids)
        counts["batches"] += 1
        counts["payments"] += len(ids)
        counts["settled"] += sum(1 for s in result.statuses.values() if s == PaymentStatus.SETTLED)
        return result

    slot = _slot_take()
    if slot is None:
        return {**counts, "busy": True}
    try:
        while True:
            ids = claim()
            if not ids:
                break
            try:
                result = one(ids)
            except Exception:
                services.drain_send(countdown=1.0)  # the others that are due still get their run
                raise
            if not result.changed and not result.waits:
                break  # nothing moved: do not spin on it (the sweeper comes back to it)
            if time.monotonic() > deadline:
                more = True
                break
            if len(ids) < (settings.PAYMENTS_BATCH or 1) and gather > 0:
                # A short batch: let the next one gather (the fixed cost of a batch — its transactions and two
                # ledger calls — is then shared by more payments), instead of chasing payments one by one.
                time.sleep(gather)
    finally:
        _slot_release(slot)
    if not more:
        ids = claim()
        if ids:
            one(ids)
            more = True
    if more:
        services.drain_send()
    _schedule_retry()
    return {**counts, "busy": False}


_retry_at: list[float] = [0.0]  # when this process's scheduled retry drain runs (epoch seconds)


def _schedule_retry() -> None:
    """Send a drain for the earliest waiting retry, unless this process already sent one that runs by then."""
    due = next_due()
    if due is None:
        return
    at = due.timestamp()
    now = time.time()
    if now < _retry_at[0] <= at + 0.05:
        return
    if services.drain_send(countdown=max(0.0, at - now)):
        _retry_at[0] = at


def sweep(*, limit: int = 500) -> dict[str, int]:
    """Claim and run payments with work to do that nobody touched for ``PAYMENTS_STALE_SECONDS`` (their
    message or worker was lost), including final ones whose hold is still to be voided, and — at once — those
    whose lease ran out (their worker died holding them); return counts."""
    stale = timezone.now() - dt.timedelta(seconds=settings.PAYMENTS_STALE_SECONDS)
    ids = claim(limit=limit, stale_before=stale)
    if not ids:
        _schedule_retry()
        return {"resumed": 0, "holds_released": 0}
    rows = list(Payment.objects.filter(id__in=ids).values_list("id", "status", "processing_errors"))
    before = {payment_id: status for payment_id, status, _ in rows}
    # Payments processed alone whose payments.process message was lost: hand them over again.
    suspects = [payment_id for payment_id, _, errors in rows if errors]
    if suspects:
        _lease_release(suspects, ids.owner)
        for payment_id in suspects:
            services.process_send(payment_id)
        ids = Claim([i for i in ids if i not in set(suspects)], owner=ids.owner, leased_at=ids.leased_at)
        before = {i: before[i] for i in ids}
    run(ids)
    resumed = sum(1 for s in before.values() if s in OPEN)
    released = Payment.objects.filter(
        id__in=[i for i, s in before.items() if s not in OPEN], hold_status=HoldStatus.VOIDED
    ).count()
    log.info("payments.swept", resumed=resumed, holds_released=released, holds_waiting=len(ids) - resumed - released)
    _schedule_retry()
    return {"resumed": resumed, "holds_released": released}
