"""The trace (``GET /api/v1/trace/{id}`` and ``/admin/trace/?q=``): one timeline of a request id, an object id or a
task id across services — audit events and jobs (direct and carried), ordered, with gaps, pending marked; bounded;
by role (a viewer sees jobs only); every lookup audited; bad ids are problems, never 500s."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.test import Client

from portal.audit.chain import ingest
from portal.jobs.models import Job, JobLink, JobState
from portal.trace import selectors
from portal.trace.selectors import TraceViewer, trace_of
from services.kit.models import OutboxEvent
from tests.portal.factories import machine_client, user_with_role
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

API = "/api/v1/trace"
T0 = dt.datetime(2026, 12, 1, 10, 0, 0, tzinfo=dt.UTC)
DRAIN = "7d6f3c2a-1b4e-4f5a-9c8d-0e1f2a3b4c5d"
NOTIFY = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"


def at(ms: float) -> dt.datetime:
    return T0 + dt.timedelta(milliseconds=ms)


_seq: dict[str, int] = {}


def event(service: str, action: str, ms: float, request_id: str, obj: tuple[str, str], **extra: Any) -> dict:
    _seq[service] = _seq.get(service, 0) + 1
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "service": service,
        "service_seq": _seq[service],
        "occurred_at": at(ms).isoformat().replace("+00:00", "Z"),
        "action": action,
        "outcome": extra.pop("outcome", "success"),
        "actor": {"type": "client", "id": "cli_shop", "display": "shop"},
        "object": {"type": obj[0], "id": obj[1]},
        "request_id": request_id,
        "source_ip": "127.0.0.1",
        "user_agent": "test",
        "changes": extra.pop("changes", {}),
        "metadata": extra.pop("metadata", {}),
    }


def job(task_id: str, name: str, state: str, queued_ms: float, **fields: Any) -> Job:
    queued = at(queued_ms)
    values: dict[str, Any] = {
        "service": name.split(".")[0],
        "queue": name.split(".")[0],
        "seen_at": queued,
        "queued_at": queued,
        "last_event_at": queued,
    }
    if state in (JobState.SUCCEEDED, JobState.FAILED):
        values |= {
            "started_at": queued + dt.timedelta(milliseconds=20),
            "finished_at": queued + dt.timedelta(milliseconds=1600),
            "runtime_ms": 1580.0,
        }
    return Job.objects.create(task_id=task_id, name=name, state=state, **(values | fields))


@pytest.fixture
def flow(settings, tmp_path) -> None:
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.ATRIUM_OUTBOX_RELAY = "off"
    seed_flow()


def seed_flow() -> None:
    """Two payments created by two requests and processed by one drain (published under beat's request): the
    first settled (its ledger transaction posted), the second still screening; a notification job queued."""
    _seq.clear()
    drain = {"task_id": DRAIN}
    ingest(
        [
            event(
                "payments",
                "payments.payment.created",
                0,
                "req_pay1",
                ("payment", "pay_1"),
                changes={"status": [None, "created"]},
            ),
            event(
                "payments",
                "payments.payment.created",
                5,
                "req_pay2",
                ("payment", "pay_2"),
                changes={"status": [None, "created"]},
            ),
            event(
                "payments",
                "payments.payment.screening",
                50,
                "req_pay1",
                ("payment", "pay_1"),
                changes={"status": ["created", "screening"]},
                metadata=drain,
            ),
            event(
                "payments",
                "payments.payment.screening",
                55,
                "req_pay2",
                ("payment", "pay_2"),
                changes={"status": ["created", "screening"]},
                metadata=drain,
            ),
            event(
                "payments",
                "payments.payment.processing",
                1000,
                "req_pay1",
                ("payment", "pay_1"),
                changes={"status": ["screening", "processing"]},
                metadata=drain,
            ),
            event(
                "ledger",
                "ledger.transaction.created",
                1200,
                "req_pay1",
                ("transaction", "txn_1"),
                changes={"status": [None, "pending"]},
            ),
            event(
                "ledger",
                "ledger.transaction.posted",
                1500,
                "req_pay1",
                ("transaction", "txn_1"),
                changes={"status": ["pending", "posted"]},
            ),
            event(
                "payments",
                "payments.payment.settled",
                1600,
                "req_pay1",
                ("payment", "pay_1"),
                changes={"status": ["processing", "settled"], "secret_token": "[redacted]"},
                metadata=drain,
            ),
        ]
    )
    job(DRAIN, "payments.drain", JobState.SUCCEEDED, 10, request_id="req_beat", retries=1,
        carried_requests=2, carried_objects=3)  # fmt: skip
    for n, (value, kind) in enumerate(
        [
            ("req_pay1", "request"),
            ("req_pay2", "request"),
            ("pay_1", "object"),
            ("pay_2", "object"),
            ("txn_1", "object"),
        ]
    ):
        JobLink.objects.create(value=value, task_id=DRAIN, kind=kind, at=at(20 + n))
    job(NOTIFY, "payments.domain_event", JobState.QUEUED, 1650, request_id="req_pay1")


@pytest.fixture
def auditor() -> Client:
    client = Client()
    client.force_login(user_with_role("auditor"))
    return client


def _get(client: Client, value: str) -> Any:
    return client.get(f"{API}/{value}")


# ------------------------------------------------------------------------------------ the API


def test_a_request_id_gives_its_events_and_jobs_ordered_with_gaps_and_pending_marked(flow, auditor):
    response = _get(auditor, "req_pay1")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["kind"] == "request"
    assert body["request_ids"] == ["req_pay1"]
    steps = [(e["kind"], e["title"]) for e in body["timeline"]]
    assert steps == [
        ("audit", "payments.payment.created"),
        ("job", "payments.drain"),
        ("audit", "payments.payment.screening"),
        ("audit", "payments.payment.processing"),
        ("audit", "ledger.transaction.created"),
        ("audit", "ledger.transaction.posted"),
        ("audit", "payments.payment.settled"),
        ("job", "payments.domain_event"),
    ]
    assert [e["gap_ms"] for e in body["timeline"]] == [None, 10.0, 40.0, 950.0, 200.0, 300.0, 100.0, 50.0]
    assert {e["service"] for e in body["timeline"]} == {"payments", "ledger"}
    drain = body["timeline"][1]
    assert drain["linked"] is True  # it carried the request; beat published it
    assert (drain["queue_wait_ms"], drain["runtime_ms"], drain["retries"], drain["state"]) == (
        20.0,
        1580.0,
        1,
        "succeeded",
    )
    assert drain["pending"] is False
    assert drain["changes"] is None
    notify = body["timeline"][-1]
    assert (notify["state"], notify["pending"], notify["linked"]) == ("queued", True, False)
    settled = body["timeline"][-2]
    assert settled["changes"]["status"] == ["processing", "settled"]
    assert settled["metadata"] == {"task_id": DRAIN}
    assert settled["object"] == {"type": "payment", "id": "pay_1"}
    assert settled["event_id"]
    objects = {(o["type"], o["id"]): (o["status"], o["pending"]) for o in body["objects"]}
    assert objects == {("payment", "pay_1"): ("settled", False), ("transaction", "txn_1"): ("posted", False)}
    assert body["pending"] is True  # the notification is still queued
    assert body["counts"] == {"events": 6, "jobs": 2}
    assert body["truncated"] == {"events": False, "jobs": False, "request_ids": False}
    assert body["duration_ms"] == 1650.0


def test_a_payment_id_resolves_to_the_requests_that_touched_it_and_shows_it_pending(flow, auditor):
    body = _get(auditor, "pay_2").json()

    assert body["kind"] == "object"
    assert body["request_ids"] == ["req_pay2"]
    assert [(e["kind"], e["title"]) for e in body["timeline"]] == [
        ("audit", "payments.payment.created"),
        ("job", "payments.drain"),
        ("audit", "payments.payment.screening"),
    ]
    assert body["objects"] == [
        {
            "type": "payment",
            "id": "pay_2",
            "status": "screening",
            "pending": True,
            "last_at": "2026-12-01T10:00:00.055000Z",
        }
    ]
    last = body["timeline"][-1]
    assert last["pending"] is True  # the payment's latest step, still on its way
    assert body["pending"] is True


def test_a_transaction_id_resolves_to_the_payment_request(flow, auditor):
    body = _get(auditor, "txn_1").json()

    assert body["kind"] == "object"
    assert body["request_ids"] == ["req_pay1"]
    assert body["counts"]["events"] == 6
    assert "payments.payment.settled" in [e["title"] for e in body["timeline"]]


def test_a_task_id_gives_the_job_its_request_and_every_request_it_carried(flow, auditor):
    body = _get(auditor, DRAIN).json()

    assert body["kind"] == "job"
    assert body["request_ids"] == ["req_beat", "req_pay1", "req_pay2"]
    assert body["counts"] == {"events": 8, "jobs": 2}
    drain = next(e for e in body["timeline"] if e["task_id"] == DRAIN)
    assert drain["linked"] is False  # published under req_beat, which this trace covers
    assert {o["id"] for o in body["objects"]} == {"pay_1", "pay_2", "txn_1"}


def test_an_unknown_id_is_404_trace_not_found(flow, auditor):
    assert_problem(_get(auditor, "req_never_seen"), 404, "trace_not_found")
    assert_problem(_get(auditor, str(uuid.uuid4())), 404, "trace_not_found")


@pytest.mark.parametrize("value", ["bad%20id", "semi%3Bcolon", "%C3%A9t%C3%A9", "a" * 201, "r" * 5000])
def test_a_malformed_id_is_400_trace_id_invalid(flow, auditor, value):
    assert_problem(_get(auditor, value), 400, "trace_id_invalid")


def test_a_viewer_sees_the_jobs_only_without_audit_entries_or_payloads(flow):
    client = Client()
    client.force_login(user_with_role("viewer"))

    response = _get(client, "pay_1")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["audit_visible"] is False
    assert {e["kind"] for e in body["timeline"]} == {"job"}
    assert [e["title"] for e in body["timeline"]] == ["payments.drain", "payments.domain_event"]
    assert body["counts"] == {"events": 0, "jobs": 2}
    assert all(o["status"] == "" and o["pending"] is False for o in body["objects"])
    text = response.content.decode()
    for hidden in ("settled", "screening", "secret_token", 'changes": {', "shop"):
        assert hidden not in text


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operators_and_admins_see_the_audit_entries(flow, role):
    client = Client()
    client.force_login(user_with_role(role))
    body = _get(client, "req_pay1").json()
    assert body["audit_visible"] is True
    assert body["counts"]["events"] == 6


def test_anonymous_and_roleless_callers_are_refused(flow):
    assert_problem(_get(Client(), "req_pay1"), 401, "not_authenticated")
    page = Client().get("/admin/trace/", {"q": "req_pay1"})
    assert page.status_code == 302
    assert page["Location"].startswith("/admin/login/")
    nobody = Client()
    nobody.force_login(user_with_role(None))
    assert_problem(_get(nobody, "req_pay1"), 403, "role_required")


def test_machine_clients_need_jobs_read_and_see_audit_entries_with_audit_read(flow, mint_token):
    def with_scopes(*scopes: str) -> Client:
        machine = machine_client(audiences=["portal"], scopes=list(scopes))
        return Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(machine, 'portal', scope=' '.join(scopes))}")

    assert _get(with_scopes("jobs:read"), "req_pay1").json()["audit_visible"] is False
    assert _get(with_scopes("jobs:read", "audit:read"), "req_pay1").json()["counts"]["events"] == 6
    assert_problem(_get(with_scopes("audit:read"), "req_pay1"), 403, "insufficient_scope")


def test_every_lookup_is_audited_refusals_of_ids_included(flow, auditor):
    _get(auditor, "req_pay1")
    _get(auditor, "req_nothing")
    _get(auditor, "bad%20id")

    rows = [
        e.payload for e in OutboxEvent.objects.order_by("created_at", "id") if e.payload["action"] == "trace.viewed"
    ]
    assert [(r["outcome"], r["object"]["id"], r["metadata"].get("reason")) for r in rows] == [
        ("success", "req_pay1", None),
        ("failure", "req_nothing", "not_found"),
        ("failure", "", "invalid_id"),
    ]
    assert rows[0]["metadata"] | {} == {
        "via": "api",
        "audit_visible": True,
        "kind": "request",
        "request_ids": 1,
        "events": 6,
        "jobs": 2,
    }
    assert rows[0]["actor"]["type"] == "user"


def test_the_slashed_spelling_redirects_to_the_canonical_one(flow, auditor):
    response = auditor.get(f"{API}/req_pay1/")
    assert response.status_code == 308
    assert response["Location"].endswith(f"{API}/req_pay1")


# ------------------------------------------------------------------------------------ the selector


def test_bounds_cut_the_timeline_and_say_so(flow, monkeypatch):
    monkeypatch.setattr(selectors, "MAX_EVENTS", 3)
    monkeypatch.setattr(selectors, "MAX_JOBS", 1)

    trace = trace_of("req_pay1", viewer=TraceViewer(audit=True))

    assert trace.events == 3
    assert trace.jobs == 1
    assert trace.truncated == {"events": True, "jobs": True, "request_ids": False}
    assert [e.title for e in trace.entries if e.kind == "audit"] == [
        "payments.payment.created",
        "payments.payment.screening",
        "payments.payment.processing",
    ]


def test_an_object_only_a_batch_carried_is_traced_through_its_job(flow):
    JobLink.objects.create(value="pay_9", task_id=DRAIN, kind="object", at=at(30))

    trace = trace_of("pay_9", viewer=TraceViewer(audit=True))

    assert trace.kind == "object"
    assert trace.request_ids == []
    assert [(e.title, e.linked) for e in trace.entries] == [("payments.drain", True)]
    assert [(o.id, o.status) for o in trace.objects] == [("pay_9", "")]


def test_a_finished_trace_is_not_pending(flow):
    Job.objects.filter(task_id=NOTIFY).update(state=JobState.SUCCEEDED)
    trace = trace_of("req_pay1", viewer=TraceViewer(audit=True))
    assert trace.pending is False
    assert not any(e.pending for e in trace.entries)


# ------------------------------------------------------------------------------------ the pages


def test_the_page_shows_the_timeline_and_links_each_id_to_its_trace(flow, auditor):
    response = auditor.get("/admin/trace/", {"q": "req_pay1"})

    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<tr data-kind="') == 8
    assert 'id="trace-pending"' in html
    assert 'href="/admin/trace/?q=pay_1"' in html
    assert 'href="/admin/trace/?q=txn_1"' in html
    assert f'href="/admin/jobs/tasks/{DRAIN}/"' in html
    assert "payments.payment.settled" in html
    rows = [e.payload for e in OutboxEvent.objects.all() if e.payload["action"] == "trace.viewed"]
    assert rows[-1]["metadata"]["via"] == "page"


def test_the_page_answers_bad_and_unknown_ids_with_the_page_itself(flow, auditor):
    bad = auditor.get("/admin/trace/", {"q": "no spaces allowed"})
    assert bad.status_code == 400
    assert 'id="trace-error"' in bad.content.decode()
    unknown = auditor.get("/admin/trace/", {"q": "req_unknown"})
    assert unknown.status_code == 404
    assert "Nothing is recorded for" in unknown.content.decode()
    empty = auditor.get("/admin/trace/")
    assert empty.status_code == 200
    assert 'id="trace-help"' in empty.content.decode()


def test_a_viewer_page_says_it_shows_jobs_only(flow):
    client = Client()
    client.force_login(user_with_role("viewer"))
    html = client.get("/admin/trace/", {"q": "req_pay1"}).content.decode()
    assert 'id="trace-jobs-only"' in html
    assert "payments.payment.settled" not in html
    assert html.count('<tr data-kind="job"') == 2


def test_every_admin_page_has_the_trace_search_box_in_its_header(flow, auditor):
    for path in ("/admin/", "/admin/jobs/", "/admin/audit/auditevent/", "/admin/catalog/"):
        html = auditor.get(path).content.decode()
        assert 'id="trace-search"' in html, path
        assert 'action="/admin/trace/"' in html


def test_the_audit_list_and_the_job_page_link_ids_to_their_trace(flow, auditor):
    html = auditor.get("/admin/audit/auditevent/").content.decode()
    assert 'href="/admin/trace/?q=req_pay1"' in html
    assert 'href="/admin/trace/?q=pay_1"' in html

    html = auditor.get(f"/admin/jobs/tasks/{DRAIN}/").content.decode()
    assert 'href="/admin/trace/?q=req_beat"' in html
    for carried in ("req_pay1", "req_pay2", "pay_1", "pay_2", "txn_1"):
        assert f'href="/admin/trace/?q={carried}"' in html, carried
    assert f'href="/admin/trace/?q={DRAIN}"' in html


def test_an_object_touched_by_more_requests_than_the_bound_keeps_the_newest(flow, monkeypatch):
    ingest([event("payments", "payments.payment.refunded", 9000, "req_refund", ("payment", "pay_1"))])
    monkeypatch.setattr(selectors, "MAX_REQUESTS", 1)

    trace = trace_of("pay_1", viewer=TraceViewer(audit=True))

    assert trace.request_ids == ["req_refund"]
    assert trace.truncated["request_ids"] is True
    # the object's own events are all there, whichever request they came with
    assert [e.title for e in trace.entries if e.kind == "audit"] == [
        "payments.payment.created",
        "payments.payment.screening",
        "payments.payment.processing",
        "payments.payment.settled",
        "payments.payment.refunded",
    ]


def test_a_job_without_a_request_id_is_its_own_trace_not_a_linked_one(flow):
    job("5e0c9a1d-2b3c-4d5e-8f90-a1b2c3d4e5f6", "ledger.integrity_check", JobState.STARTED, 5000)

    trace = trace_of("5e0c9a1d-2b3c-4d5e-8f90-a1b2c3d4e5f6", viewer=TraceViewer(audit=True))

    assert trace.kind == "job"
    assert trace.request_ids == []
    assert [(e.title, e.linked, e.pending) for e in trace.entries] == [("ledger.integrity_check", False, True)]
    assert trace.pending is True


def test_earlier_lookups_on_record_do_not_turn_a_request_id_into_an_object(flow, auditor):
    # given a lookup of req_pay1 recorded and chained (trace.viewed names the id it looked up as its object)
    ingest([event("portal", "trace.viewed", 99_000, "req_lookup", ("trace", "req_pay1"), metadata={"via": "api"})])

    body = _get(auditor, "req_pay1").json()

    assert body["kind"] == "request"
    assert body["request_ids"] == ["req_pay1"]
    assert "trace.viewed" not in [e["title"] for e in body["timeline"]]
