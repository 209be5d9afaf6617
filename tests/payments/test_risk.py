"""Risk screening: payments ask the risk service (a stand-in speaking its HTTP contract, over real HTTP with a real
JWT) about each screening batch in one call; allow goes on, review waits for an operator, deny is rejected; while
risk is away PAYMENTS_RISK_FALLBACK decides; a payment risk fails on is isolated; RISK_URL unset changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core import checks
from django.test import Client

from services.kit import http as kit_http
from services.kit.models import OutboxEvent
from services.payments import metrics, processing, risk
from services.payments.checks import check_risk_settings
from services.payments.models import Payment
from tests.payments.conftest import LedgerAdmin, PaymentsAPI
from tests.payments.risk_standin import DENY_FROM, REVIEW_FROM, RiskStandIn
from tests.payments.test_processing import create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("payments_env", "counters_cleared")]

PASSWORD = "a long enough password"


@pytest.fixture
def stand_in(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RiskStandIn]:
    """The risk stand-in, and this process's payments pointed at it (short timeout, no retries, a breaker that
    lets a trial through after 0.2 s)."""
    server = RiskStandIn()
    settings.RISK_URL = server.url
    settings.PAYMENTS_RISK_TIMEOUT = 0.5
    settings.PAYMENTS_RISK_RETRIES = 0
    settings.PAYMENTS_RISK_FALLBACK = "hold"
    monkeypatch.setattr(risk, "RISK_CIRCUIT_RESET", 0.2)
    monkeypatch.setattr(processing.services, "process_send", lambda *a, **k: True)  # (the test runs them itself)
    monkeypatch.setattr(processing.services, "drain_send", lambda *a, **k: True)
    kit_http._breakers.pop(f"risk {server.url}", None)
    risk.risk_reset()
    yield server
    server.stop()
    risk.risk_reset()
    kit_http._breakers.pop(f"risk {server.url}", None)


@pytest.fixture
def pair(ledger_admin: LedgerAdmin) -> tuple[str, str]:
    return ledger_admin.funded(10_000_000), ledger_admin.account()


def batch(pair: tuple[str, str], *amounts: int) -> list[Payment]:
    return [create(pair[0], pair[1], amount) for amount in amounts]


def carry(payments: list[Payment]) -> dict[str, Payment]:
    """One worker batch over the payments (processing.run), then them as stored."""
    processing.run([p.id for p in payments])
    return {p.id: Payment.objects.get(id=p.id) for p in payments}


def audit(payment_id: str) -> list[dict[str, Any]]:
    rows = OutboxEvent.objects.filter(topic="audit", payload__object__id=payment_id).order_by("created_at", "id")
    return [r.payload for r in rows]


def counter(settings: Any, name: str) -> int:
    import redis

    return int(redis.Redis.from_url(settings.REDIS_URL).hget(metrics.KEY, name) or 0)


# ---- decisions ------------------------------------------------------------------------------------------------


def test_one_call_per_batch_decides_allow_review_and_deny(
    stand_in: RiskStandIn, pair, settings, ledger_admin: LedgerAdmin
):
    allow, review, deny = batch(pair, 1_000, REVIEW_FROM, DENY_FROM)

    stored = carry([allow, review, deny])

    # one call for the whole batch, with the contract's fields only, under a risk token
    assert stand_in.batches == [[allow.id, review.id, deny.id]]
    sent = stand_in.bodies[0]["payments"][0]
    assert set(sent) == {
        "payment_id",
        "amount",
        "currency",
        "source_account",
        "destination_account",
        "client_id",
        "created_at",
    }
    assert (sent["amount"], sent["currency"], sent["client_id"]) == (1_000, "EUR", "cli_merchant")
    # allow: on to the ledger
    assert stored[allow.id].status == "settled"
    assert (stored[allow.id].risk_decision, stored[allow.id].risk_score) == ("allow", 5)
    assert stored[allow.id].risk_assessment_id.startswith("rsk_")
    assert ledger_admin.transaction_by_reference(allow.id)[0]["status"] == "posted"
    # review: waits, nothing in the ledger
    assert stored[review.id].status == "review"
    assert (stored[review.id].risk_decision, stored[review.id].risk_reasons) == ("review", ["amount_outlier"])
    assert [h["status"] for h in stored[review.id].status_history] == ["created", "screening", "review"]
    assert ledger_admin.transaction_by_reference(review.id) == []
    # deny: rejected with the reasons
    assert (stored[deny.id].status, stored[deny.id].failure_code) == ("rejected", "risk_denied")
    assert "Risk score 90" in stored[deny.id].failure_message
    assert "first payment to this destination" in stored[deny.id].failure_message
    assert stored[deny.id].risk_reasons == ["amount_high", "new_payee"]
    assert ledger_admin.transaction_by_reference(deny.id) == []
    # audited and published like every transition (review is internal: audited, not published)
    assert [e["action"] for e in audit(review.id)][-1] == "payments.payment.review"
    assert OutboxEvent.objects.filter(topic="events", payload__type="payment.rejected").count() == 1
    assert not OutboxEvent.objects.filter(topic="events", payload__type="payment.review").exists()
    assert counter(settings, "risk_decisions:review") == 1


def test_risk_is_called_holding_no_screening_lock(stand_in: RiskStandIn, pair):
    from django.db import connections

    seen: list[tuple[int, list[str]]] = []

    def look(ids: list[str]) -> None:
        # (this runs in the stand-in's thread: a database connection of its own, outside the worker's transaction)
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()")
            advisory = cursor.fetchone()[0]
            cursor.execute("SELECT id FROM payments_payment WHERE id = ANY(%s) FOR UPDATE NOWAIT", [ids])
            seen.append((advisory, sorted(row[0] for row in cursor.fetchall())))
        connections["default"].close()

    stand_in.on_call = look
    payments = batch(pair, 100, 200)

    stored = carry(payments)

    assert seen == [(0, sorted(p.id for p in payments))]  # no account lock held, the rows free to lock
    assert {p.status for p in stored.values()} == {"settled"}


def test_a_review_payment_is_not_claimed_retried_or_swept(stand_in: RiskStandIn, pair):
    (review,) = batch(pair, REVIEW_FROM)
    carry([review])

    assert processing.claim(ids=[review.id]) == []
    assert processing.claim() == []
    processing.sweep()
    assert Payment.objects.get(id=review.id).status == "review"
    assert stand_in.calls() == 1


def test_risk_is_asked_only_about_payments_that_pass_the_admins_rules(
    stand_in: RiskStandIn, pair, ledger_admin: LedgerAdmin
):
    from services.payments.models import BlockedAccount

    blocked = ledger_admin.account()
    BlockedAccount.objects.create(account=blocked)
    ok = create(pair[0], pair[1], 100)
    refused = create(pair[0], blocked, 200)

    stored = carry([ok, refused])

    assert stand_in.batches == [[ok.id]]
    assert (stored[ok.id].status, stored[refused.id].failure_code) == ("settled", "account_blocked")
    assert stored[refused.id].risk_decision == ""

    carry([create(pair[0], blocked, 300)])
    assert stand_in.calls() == 1  # nothing passed the rules: no call at all


# ---- operators' decisions: API ---------------------------------------------------------------------------------


def post(api: PaymentsAPI, path: str, body: Any = None, scope: str | None = None) -> Any:
    headers = api.headers
    if scope is not None:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {api.key.mint(aud='payments', sub=api.client_id, scope=scope)}"}
    data = "" if body is None else json.dumps(body)
    return api.client.post(f"/api/v1/payments/{path}", data, content_type="application/json", **headers)


def test_review_then_approve_settles_and_is_audited_with_the_client(
    stand_in: RiskStandIn, pair, api: PaymentsAPI, ledger_admin: LedgerAdmin
):
    (review,) = batch(pair, REVIEW_FROM + 1)
    carry([review])

    response = post(api, f"{review.id}/approve", {"reason": "known customer"})

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "processing"
    approved = [e for e in audit(review.id) if e["action"] == "payments.payment.review_approved"]
    assert len(approved) == 1
    assert (approved[0]["actor"]["type"], approved[0]["actor"]["id"]) == ("client", "cli_merchant")
    assert approved[0]["metadata"]["reason"] == "known customer"
    assert approved[0]["metadata"]["risk_score"] == 60
    assert approved[0]["changes"] == {"status": ["review", "processing"]}
    # then the workers carry it to the ledger as usual (risk is not asked again)
    processing.advance(review.id)
    settled = Payment.objects.get(id=review.id)
    assert settled.status == "settled"
    assert [h["status"] for h in settled.status_history] == ["created", "screening", "review", "processing", "settled"]
    assert ledger_admin.transaction_by_reference(review.id)[0]["status"] == "posted"
    assert stand_in.calls() == 1
    # approving again: 409 with the current status
    again = post(api, f"{review.id}/approve")
    assert again.status_code == 409
    assert (again.json()["code"], again.json()["payment_status"]) == ("payment_not_in_review", "settled")


def test_review_then_reject_ends_it_rejected_and_published(stand_in: RiskStandIn, pair, api: PaymentsAPI):
    (review,) = batch(pair, REVIEW_FROM)
    carry([review])

    response = post(api, f"{review.id}/reject", {"reason": "payee unknown to the customer"})

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["failure_code"]) == ("rejected", "risk_review_rejected")
    assert "payee unknown" in body["failure_message"]
    actions = [e["action"] for e in audit(review.id)]
    assert actions[-2:] == ["payments.payment.rejected", "payments.payment.review_rejected"]
    assert OutboxEvent.objects.filter(
        topic="events", payload__type="payment.rejected", payload__data__id=review.id
    ).exists()
    assert post(api, f"{review.id}/reject").json()["payment_status"] == "rejected"
    assert post(api, f"{review.id}/approve").status_code == 409


def test_the_review_endpoints_refuse_what_they_must(stand_in: RiskStandIn, pair, api: PaymentsAPI):
    allow, review = batch(pair, 10, REVIEW_FROM)
    created = create(pair[0], pair[1], 20)
    carry([allow, review])

    # not in review (settled, created): 409; unknown: 404
    for payment, status in ((allow, "settled"), (created, "created")):
        for verb in ("approve", "reject"):
            refused = post(api, f"{payment.id}/{verb}")
            assert refused.status_code == 409
            assert refused.headers["Content-Type"].startswith("application/problem+json")
            assert (refused.json()["code"], refused.json()["payment_status"]) == ("payment_not_in_review", status)
    assert post(api, "pay_00000000000000000000000000/approve").json()["code"] == "payment_not_found"
    # the scope: payments:write
    weak = post(api, f"{review.id}/approve", scope="payments:read")
    assert (weak.status_code, weak.json()["code"]) == (403, "insufficient_scope")
    # the body: only an optional reason of at most 500 characters
    assert post(api, f"{review.id}/reject", {"why": "x"}).json()["code"] == "validation_error"
    assert post(api, f"{review.id}/reject", {"reason": "x" * 501}).status_code == 400
    assert post(api, f"{review.id}/reject", {"reason": ["x"]}).status_code == 400
    # nothing of that moved it
    assert Payment.objects.get(id=review.id).status == "review"


def test_a_payment_in_review_can_be_canceled(stand_in: RiskStandIn, pair, api: PaymentsAPI):
    (review,) = batch(pair, REVIEW_FROM)
    carry([review])

    response = api.cancel(review.id)

    assert (response.status_code, response.json()["status"]) == (200, "canceled")
    assert post(api, f"{review.id}/approve").json()["payment_status"] == "canceled"


# ---- operators' decisions: admin -------------------------------------------------------------------------------


def admin_login(username: str, *, superuser: bool = True, perms: tuple[str, ...] = ()) -> Client:
    users = get_user_model()
    if superuser:
        users.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
    else:
        user = users.objects.create_user(username, f"{username}@example.com", PASSWORD, is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__in=perms, content_type__app_label="payments"))
    client = Client()
    response = client.post("/admin/login/", {"username": username, "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302
    return client


def test_admin_approves_on_the_payments_page_and_rejects_from_the_list(stand_in: RiskStandIn, pair):
    first, second = batch(pair, REVIEW_FROM, REVIEW_FROM + 5)
    carry([first, second])
    ops = admin_login("ops")

    page = ops.get(f"/admin/payments/payment/{first.id}/change/")
    assert page.status_code == 200
    assert b"/review/approve/" in page.content
    form = ops.get(f"/admin/payments/payment/{first.id}/review/approve/")
    assert form.status_code == 200
    done = ops.post(f"/admin/payments/payment/{first.id}/review/approve/", {"reason": "checked by phone"})
    assert done.status_code == 302
    assert Payment.objects.get(id=first.id).status == "processing"
    approved = next(e for e in audit(first.id) if e["action"] == "payments.payment.review_approved")
    assert (approved["actor"]["type"], approved["actor"]["display"]) == ("user", "ops")
    assert approved["metadata"]["reason"] == "checked by phone"

    listed = ops.post(
        "/admin/payments/payment/", {"action": "reject_selected", "_selected_action": [first.id, second.id]}
    )
    assert listed.status_code == 302
    assert Payment.objects.get(id=second.id).failure_code == "risk_review_rejected"
    assert Payment.objects.get(id=first.id).status == "processing"  # not in review any more: refused, untouched
    rejected = next(e for e in audit(second.id) if e["action"] == "payments.payment.review_rejected")
    assert rejected["actor"]["type"] == "user"


def test_admin_review_needs_the_change_permission(stand_in: RiskStandIn, pair):
    (review,) = batch(pair, REVIEW_FROM)
    carry([review])
    viewer = admin_login("viewer", superuser=False, perms=("view_payment",))

    page = viewer.get(f"/admin/payments/payment/{review.id}/change/")
    assert page.status_code == 200
    assert b"/review/approve/" not in page.content
    assert viewer.post(f"/admin/payments/payment/{review.id}/review/approve/", {}).status_code == 403
    listed = viewer.post("/admin/payments/payment/", {"action": "approve_selected", "_selected_action": [review.id]})
    assert listed.status_code == 403
    assert Payment.objects.get(id=review.id).status == "review"


# ---- risk away: the fallback -----------------------------------------------------------------------------------


def test_hold_keeps_them_in_screening_never_exhausted_and_all_proceed_when_risk_returns(
    stand_in: RiskStandIn, pair, settings, ledger_admin: LedgerAdmin
):
    settings.PAYMENTS_MAX_ATTEMPTS = 2
    payments = batch(pair, 100, 200, REVIEW_FROM, DENY_FROM)
    stand_in.stop()

    for _ in range(4):  # more runs than PAYMENTS_MAX_ATTEMPTS: never exhausted while held
        stored = carry(payments)
        assert {p.status for p in stored.values()} == {"screening"}
    assert all(p.next_attempt_at is not None for p in stored.values())
    assert {p.attempts for p in stored.values()} == {4}
    assert processing.claim() == []  # not due yet: they wait their backoff
    assert counter(settings, "risk_fallbacks:hold") == 16

    stand_in.start()
    time.sleep(0.3)  # past the breaker's reset: its trial call goes through
    stored = carry(payments)

    assert [stored[p.id].status for p in payments] == ["settled", "settled", "review", "rejected"]
    assert stored[payments[0].id].attempts == 0  # the held attempts were screening's, not the ledger's
    assert stand_in.batches == [[p.id for p in payments]]


def test_hold_when_risk_answers_500_garbage_or_hangs(stand_in: RiskStandIn, pair, settings):
    for mode in ("500", "garbage", "hang"):
        stand_in.mode = mode
        payments = batch(pair, 100, 200, 300)
        before = stand_in.calls()
        started = time.monotonic()

        stored = carry(payments)

        elapsed = time.monotonic() - started
        assert {p.status for p in stored.values()} == {"screening"}, mode
        assert {p.processing_errors for p in stored.values()} == {0}, mode  # nobody blamed
        if mode == "hang":
            assert stand_in.calls() - before == 1
            assert elapsed < 1.5  # the 0.5 s timeout, not the 2 s hang
        else:  # split down to each payment, which fails alone too: risk is failing, not a payment
            assert stand_in.calls() - before == 5
        stand_in.mode = "ok"
        kit_http._breakers.pop(f"risk {stand_in.url}", None)
        risk.risk_reset()
        stored = carry(payments)
        assert {p.status for p in stored.values()} == {"settled"}, mode


def test_allow_lets_them_on_with_the_rules_only(stand_in: RiskStandIn, pair, settings):
    from services.payments.models import CurrencyLimit

    settings.PAYMENTS_RISK_FALLBACK = "allow"
    CurrencyLimit.objects.create(currency="EUR", max_amount=DENY_FROM)
    stand_in.stop()
    ok, big, over = batch(pair, 100, DENY_FROM, DENY_FROM + 1)

    stored = carry([ok, big, over])

    assert stored[ok.id].status == stored[big.id].status == "settled"
    assert stored[ok.id].risk_decision == ""
    assert stored[over.id].failure_code == "amount_limit_exceeded"
    assert counter(settings, "risk_fallbacks:allow") == 2


def test_deny_rejects_them_with_risk_unavailable(stand_in: RiskStandIn, pair, settings, ledger_admin: LedgerAdmin):
    settings.PAYMENTS_RISK_FALLBACK = "deny"
    stand_in.stop()
    payments = batch(pair, 100, 200)

    stored = carry(payments)

    assert {(p.status, p.failure_code) for p in stored.values()} == {("rejected", "risk_unavailable")}
    assert "could not be reached" in stored[payments[0].id].failure_message
    assert ledger_admin.transaction_by_reference(payments[0].id) == []
    assert counter(settings, "risk_fallbacks:deny") == 2


# ---- a payment risk fails on ------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["poison", "refuse"])
def test_a_poisoned_payment_is_isolated_and_the_others_are_assessed(stand_in: RiskStandIn, pair, settings, failure):
    payments = batch(pair, *(100 + i for i in range(8)))
    bad = payments[5]
    getattr(stand_in, failure).add(bad.id)

    stored = carry(payments)

    assert {p.status for i, p in stored.items() if i != bad.id} == {"settled"}
    assert stored[bad.id].status == "screening"
    assert stored[bad.id].processing_errors == 1  # handed to payments.process: tried alone, then parked
    assert stand_in.calls() <= 1 + 2 * 3  # split in halves down to it, not one call per payment
    for _ in range(settings.PAYMENTS_PROCESSING_ATTEMPTS):
        outcome = processing.advance(bad.id)
        if outcome.parked:
            break
    assert outcome.parked
    parked = Payment.objects.get(id=bad.id)
    assert (parked.status, parked.failure_code) == ("failed", "processing_error")
    assert "risk" in parked.failure_message


# ---- off, and its settings --------------------------------------------------------------------------------------


def test_without_risk_url_nothing_is_asked_and_nothing_changes(stand_in: RiskStandIn, pair, settings):
    settings.RISK_URL = ""
    risk.risk_reset()
    payments = batch(pair, 100, REVIEW_FROM, DENY_FROM)

    stored = carry(payments)

    assert {p.status for p in stored.values()} == {"settled"}
    assert {p.risk_decision for p in stored.values()} == {""}
    assert {p.risk_score for p in stored.values()} == {None}
    assert stand_in.calls() == 0
    assert [h["status"] for h in stored[payments[1].id].status_history] == [
        "created",
        "screening",
        "processing",
        "settled",
    ]


def test_the_settings_are_checked(settings):
    settings.PAYMENTS_RISK_FALLBACK = "maybe"
    (error,) = check_risk_settings(None)
    assert (error.id, error.level) == ("payments.E004", checks.ERROR)
    assert "hold, allow, deny" in error.msg
    for fallback in ("hold", "allow", "deny"):
        settings.PAYMENTS_RISK_FALLBACK = fallback
        assert check_risk_settings(None) == []
    settings.RISK_URL = "http://127.0.0.1:1"
    settings.PAYMENTS_RISK_TIMEOUT = 10.0
    assert [e.id for e in check_risk_settings(None)] == ["payments.E005"]
    settings.PAYMENTS_RISK_TIMEOUT = 0
    assert [e.id for e in check_risk_settings(None)] == ["payments.E006"]


def test_the_metrics_show_calls_decisions_and_fallbacks(stand_in: RiskStandIn, pair, settings):
    carry(batch(pair, 100, REVIEW_FROM))
    stand_in.stop()
    carry(batch(pair, 100))

    families = {f.name: f for f in metrics.ProcessingCollector().collect()}

    decisions = {s.labels["decision"]: s.value for s in families["atrium_payments_risk_decisions"].samples}
    assert (decisions["allow"], decisions["review"], decisions["deny"]) == (1, 1, 0)
    fallbacks = {s.labels["fallback"]: s.value for s in families["atrium_payments_risk_fallbacks"].samples}
    assert fallbacks["hold"] == 1
    counts = {
        s.labels["outcome"]: s.value
        for s in families["atrium_payments_risk_call_seconds"].samples
        if s.name.endswith("_count")
    }
    assert (counts["ok"], counts["unavailable"]) == (1, 1)
