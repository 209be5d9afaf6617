"""Audit events over HTTP (POST /api/v1/audit/events:ingest) and their published JSON Schema (GET .../schema).

The checks in the contract's order (envelope, identity, sequence under the sequencer's lock, then chained like the
Celery relay's events); refusals are problems with stable codes, never a 500, and what was refused is kept in
audit_rejected; concurrent requests of one service never leave a gap or a duplicate; the chain verifies
(``audit_verify --strict-services``) with HTTP-ingested and Python-relayed events mixed; and one run end to end
over real HTTP with a token from the portal's own token endpoint.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import httpx
import jsonschema
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from portal.audit.chain import ingest
from portal.audit.chain_check import verify_log
from portal.audit.models import AuditEvent, AuditRejected
from portal.audit.parked import PARKED_ACTION
from portal.catalog.models import Service
from services.kit.audit import audit_event
from services.kit.outbox import event_expand
from tests.audit.test_chain import make_event
from tests.portal.factories import machine_client, user_with_role
from tests.problems import assert_problem

INGEST = "/api/v1/audit/events:ingest"
SCHEMA = "/api/v1/audit/schema"
TOKEN = "/api/v1/auth/token"


@pytest.fixture(autouse=True)
def _setup(settings, tmp_path):
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.ATRIUM_OUTBOX_RELAY = "off"


def risk_event(n: int, **extra: Any) -> dict[str, Any]:
    fields = {"id": f"evt_risk_{n}", "action": "risk.rules.updated", "object": {"type": "risk_rules", "id": "risk"}}
    return make_event("risk", n, **{**fields, **extra})


def token(client: Client, machine: Any, audience: str = "portal", **extra: str) -> str:
    response = client.post(TOKEN, json.dumps(machine.token_request(audience, **extra)), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


@pytest.fixture
def risk(client):
    """The risk service's machine client, which registered 'risk' in the catalog; a token for audit:ingest."""
    machine = machine_client(audiences=["portal"], scopes=["catalog:register", "audit:ingest"], name="risk-service")
    Service.objects.create(slug="risk", display_name="Risk", registered_by=machine.id)
    return {"machine": machine, "token": token(client, machine)}


def post(client: Client, bearer: str, body: Any, *, raw: bytes | None = None, content_type: str = "application/json"):
    data = raw if raw is not None else json.dumps(body)
    return client.post(INGEST, data, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {bearer}")


def chained(service: str = "risk") -> list[tuple[int, str]]:
    rows = AuditEvent.objects.filter(service=service).order_by("service_seq")
    return list(rows.values_list("service_seq", "event_id"))


def strictly_verified() -> None:
    report = verify_log()
    assert report.ok, report.problems
    assert report.service_missing == {}, report.service_gaps
    out = io.StringIO()
    call_command("audit_verify", "--strict-services", stdout=out)  # raises CommandError (exit 1) if not


# ------------------------------------------------------------------------------------ success, idempotence


@pytest.mark.django_db
def test_a_batch_is_chained_and_sending_it_again_changes_nothing(client, risk):
    # given nothing of risk's recorded yet
    events = [risk_event(n) for n in range(1, 6)]

    # when the batch is sent, then sent again (the relay did not see the first answer)
    first = post(client, risk["token"], {"events": events})
    again = post(client, risk["token"], {"events": events})

    # then it is chained once; the replay answers 200 with every event a duplicate
    assert first.status_code == 200, first.content
    assert first.json() == {"inserted": 5, "duplicates": 0, "parked": 0, "first_seq": 1, "last_seq": 5}
    assert again.status_code == 200, again.content
    assert again.json() == {"inserted": 0, "duplicates": 5, "parked": 0, "first_seq": None, "last_seq": None}
    assert chained() == [(n, f"evt_risk_{n}") for n in range(1, 6)]
    # and a batch overlapping what is recorded adds only what is new
    third = post(client, risk["token"], {"events": [risk_event(n) for n in range(4, 9)]})
    assert third.json() == {"inserted": 3, "duplicates": 2, "parked": 0, "first_seq": 6, "last_seq": 8}
    assert AuditRejected.objects.count() == 0
    strictly_verified()


# ------------------------------------------------------------------------------------ the sequence


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("numbers", "expected", "received"),
    [
        pytest.param([4, 5, 7, 8], 6, 7, id="a-hole-inside-the-batch"),
        pytest.param([6, 7], 4, 6, id="a-batch-starting-past-the-next-number"),
    ],
)
def test_a_gap_is_refused_with_the_numbers_and_kept_aside(client, risk, numbers, expected, received):
    # given risk's events 1..3 recorded
    assert post(client, risk["token"], {"events": [risk_event(n) for n in (1, 2, 3)]}).status_code == 200

    # when a batch leaves a hole
    response = post(client, risk["token"], {"events": [risk_event(n) for n in numbers]})

    # then the whole request is refused: nothing of it is chained, the problem names both numbers
    body = assert_problem(response, 409, "audit_sequence_gap")
    assert (body["service"], body["expected_seq"], body["received_seq"]) == ("risk", expected, received)
    assert chained() == [(1, "evt_risk_1"), (2, "evt_risk_2"), (3, "evt_risk_3")]
    # and its events are kept in audit_rejected, once even when the relay sends the batch again
    kept = list(AuditRejected.objects.all())
    assert sorted(r.payload["service_seq"] for r in kept) == sorted(numbers)
    assert all("audit_sequence_gap" in r.reason and risk["machine"].id in r.reason for r in kept)
    assert_problem(post(client, risk["token"], {"events": [risk_event(n) for n in numbers]}), 409, "audit_sequence_gap")
    assert AuditRejected.objects.count() == len(numbers)


@pytest.mark.django_db
def test_the_first_event_of_a_service_is_number_1(client, risk):
    response = post(client, risk["token"], {"events": [risk_event(2)]})

    body = assert_problem(response, 409, "audit_sequence_gap")
    assert (body["expected_seq"], body["received_seq"]) == (1, 2)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("event", "says"),
    [
        pytest.param(risk_event(2, id="evt_other"), "already holds the event 'evt_risk_2'", id="place-taken"),
        pytest.param({**risk_event(3), "id": "evt_risk_1"}, "was recorded as risk sequence 1", id="id-elsewhere"),
    ],
)
def test_a_conflicting_event_is_refused_and_kept_aside(client, risk, event, says):
    # given risk's events 1..2 recorded
    assert post(client, risk["token"], {"events": [risk_event(1), risk_event(2)]}).status_code == 200

    # when an event claims a recorded place under another id, or a recorded id at another place
    response = post(client, risk["token"], {"events": [event]})

    # then 409 audit_sequence_conflict, nothing chained, the event kept aside with the reason
    body = assert_problem(response, 409, "audit_sequence_conflict")
    assert says in body["detail"]
    assert body["conflicts"][0]["id"] == event["id"]
    assert chained() == [(1, "evt_risk_1"), (2, "evt_risk_2")]
    (kept,) = AuditRejected.objects.all()
    assert kept.payload == event
    assert "audit_sequence_conflict" in kept.reason


@pytest.mark.django_db
def test_two_events_of_one_batch_claiming_one_place_conflict(client, risk):
    response = post(client, risk["token"], {"events": [risk_event(1), risk_event(1, id="evt_twin")]})

    assert_problem(response, 409, "audit_sequence_conflict")
    assert chained() == []


@pytest.mark.django_db
def test_a_malformed_payload_is_parked_in_its_place_and_keeps_the_sequence(client, risk):
    # given a batch whose second event has no action and an outcome the log does not know
    broken = {k: v for k, v in risk_event(2).items() if k != "action"} | {"outcome": "maybe"}
    response = post(client, risk["token"], {"events": [risk_event(1), broken, risk_event(3)]})

    # then all three places are taken: the malformed one by a placeholder saying why
    assert response.status_code == 200, response.content
    assert response.json() == {"inserted": 3, "duplicates": 0, "parked": 1, "first_seq": 1, "last_seq": 3}
    placeholder = AuditEvent.objects.get(service="risk", service_seq=2)
    assert (placeholder.event_id, placeholder.action, placeholder.outcome) == ("evt_risk_2", PARKED_ACTION, "failure")
    assert "action" in placeholder.metadata["reason"]
    # and the sequence goes on from 4
    assert post(client, risk["token"], {"events": [risk_event(4)]}).json()["first_seq"] == 4
    strictly_verified()


# ------------------------------------------------------------------------------------ identity, scope, audience


@pytest.mark.django_db
def test_an_event_of_another_clients_service_is_refused(client, risk):
    # given payments registered by its own client
    other = machine_client(audiences=["portal"], scopes=["audit:ingest"], name="payments-service")
    Service.objects.create(slug="payments", display_name="Payments", registered_by=other.id)

    # when risk sends an event claiming to be payments' (among its own)
    events = [risk_event(1), make_event("payments", 1)]
    response = post(client, risk["token"], {"events": events})

    # then 403 audit_service_mismatch, nothing chained, both kept aside
    body = assert_problem(response, 403, "audit_service_mismatch")
    assert body["service"] == "payments"
    assert AuditEvent.objects.count() == 0
    assert AuditRejected.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("registered_by", [None, ""], ids=["not-in-the-catalog", "imported-nobody-registered-it"])
def test_an_event_of_an_unregistered_service_is_refused(client, risk, registered_by):
    if registered_by is not None:
        Service.objects.create(slug="fraud", display_name="Fraud", registered_by=registered_by)

    response = post(client, risk["token"], {"events": [make_event("fraud", 1)]})

    body = assert_problem(response, 403, "audit_service_unregistered")
    assert body["service"] == "fraud"
    assert AuditEvent.objects.count() == 0
    assert AuditRejected.objects.count() == 1


@pytest.mark.django_db
def test_a_token_without_the_scope_or_for_another_audience_or_none_is_refused(client, risk):
    reader = machine_client(audiences=["portal", "ledger"], scopes=["audit:read", "ledger:read"])
    body = {"events": [risk_event(1)]}

    assert_problem(post(client, token(client, reader), body), 403, "insufficient_scope")
    assert_problem(post(client, token(client, reader, "ledger"), body), 403, "invalid_audience")
    assert_problem(client.post(INGEST, json.dumps(body), content_type="application/json"), 401, "not_authenticated")
    # a person (even an admin) ingests nothing: events come from services
    client.force_login(user_with_role("admin"))
    assert_problem(client.post(INGEST, json.dumps(body), content_type="application/json"), 403, "insufficient_scope")
    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
def test_the_openapi_document_offers_only_a_machine_clients_token_for_ingest(client):
    # the portal's OpenAPI: ingest takes a bearer token (or the oauth2 flow with audit:ingest), never the session
    # cookie that every people-facing operation lists, since a signed-in person is answered 403
    document = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    ingest_security = document["paths"]["/api/v1/audit/events:ingest"]["post"]["security"]
    assert ingest_security == [{"oauth2": ["audit:ingest"]}, {"bearerAuth": []}]
    assert {"cookieAuth": []} in document["paths"]["/api/v1/audit/events"]["get"]["security"]


# ------------------------------------------------------------------------------------ malformed bodies


MALFORMED = {
    "not-an-object": ([risk_event(1)], "#/", "invalid"),
    "no-events": ({"evnts": [risk_event(1)]}, "#/evnts", "unknown_field"),
    "events-not-a-list": ({"events": risk_event(1)}, "#/events", "not_a_list"),
    "no-event": ({"events": []}, "#/events", "empty"),
    "too-many": ({"events": [risk_event(n) for n in range(1, 1002)]}, "#/events", "max_length"),
    "event-not-an-object": ({"events": [risk_event(1), "evt_risk_2"]}, "#/events/1", "not_an_object"),
    "no-id": ({"events": [{k: v for k, v in risk_event(1).items() if k != "id"}]}, "#/events/0/id", "invalid"),
    "id-too-long": ({"events": [risk_event(1, id="evt_" + "x" * 61)]}, "#/events/0/id", "invalid"),
    "service-not-a-string": ({"events": [{**risk_event(1), "service": 7}]}, "#/events/0/service", "invalid"),
    "seq-a-string": ({"events": [{**risk_event(1), "service_seq": "1"}]}, "#/events/0/service_seq", "invalid"),
    "seq-zero": ({"events": [{**risk_event(1), "service_seq": 0}]}, "#/events/0/service_seq", "invalid"),
    "seq-a-bool": ({"events": [{**risk_event(1), "service_seq": True}]}, "#/events/0/service_seq", "invalid"),
    "seq-past-bigint": ({"events": [{**risk_event(1), "service_seq": 2**63}]}, "#/events/0/service_seq", "invalid"),
    "seq-a-float": ({"events": [{**risk_event(1), "service_seq": 1.5}]}, "#/events/0/service_seq", "invalid"),
}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_envelope_is_a_validation_problem_and_kept_aside(client, risk, kind):
    body, pointer, code = MALFORMED[kind]

    response = post(client, risk["token"], body)

    problem = assert_problem(response, 400, "validation_error")
    assert (pointer, code) in [(e["pointer"], e["code"]) for e in problem["errors"]], problem["errors"]
    assert AuditEvent.objects.count() == 0
    assert AuditRejected.objects.count() >= 1
    assert all("validation_error" in r.reason for r in AuditRejected.objects.all())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [
        pytest.param(b'{"events": [', "application/json", 400, "malformed_json", id="truncated"),
        pytest.param(b"\xff\xfe not utf-8", "application/json", 400, "malformed_json", id="not-utf-8"),
        pytest.param(b'{"events": [], "events": []}', "application/json", 400, "duplicate_key", id="duplicate-key"),
        pytest.param(b'{"events": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json", 400, "json_too_deep",
                     id="too-deep"),
        pytest.param(b"events=1", "text/plain", 415, "unsupported_media_type", id="not-json"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_json_document_is_a_problem_and_kept_aside(client, risk, raw, content_type, status, code):
    response = post(client, risk["token"], None, raw=raw, content_type=content_type)

    assert_problem(response, status, code)
    (kept,) = AuditRejected.objects.all()
    assert kept.payload["raw"]["raw_bytes"] == len(raw)
    assert code in kept.reason


@pytest.mark.django_db
def test_a_body_over_the_limit_is_refused_unread(client, risk, settings):
    settings.AUDIT_INGEST_MAX_BODY_BYTES = 10_000
    body = {"events": [risk_event(n, metadata={"pad": "x" * 500}) for n in range(1, 40)]}

    assert_problem(post(client, risk["token"], body), 413, "payload_too_large")


@pytest.mark.django_db
def test_the_database_going_away_while_chaining_is_a_503_and_nothing_is_written(client, risk, monkeypatch):
    from portal.audit import chain

    def away(events: list[Any]) -> None:
        raise chain.IngestDeferred("the portal database is unavailable: OperationalError: gone")

    monkeypatch.setattr(chain, "ingest", away)

    response = post(client, risk["token"], {"events": [risk_event(1)]})

    assert_problem(response, 503, "database_unavailable")
    assert AuditEvent.objects.count() == 0
    monkeypatch.undo()
    assert post(client, risk["token"], {"events": [risk_event(1)]}).json()["inserted"] == 1


# ------------------------------------------------------------------------------------ mixed with the Python relay


@pytest.mark.django_db
def test_the_chain_verifies_with_http_events_and_python_relayed_events_mixed(client, risk):
    # given payments' events relayed the Python way (Celery into chain.ingest, compact and out of order) and
    # risk's sent over HTTP, interleaved
    def relayed(n: int) -> list[Any]:
        event = make_event("payments", n, id=f"evt_pay_{n}")
        body = {k: v for k, v in event.items() if k not in ("id", "service", "service_seq")}
        return [event["id"], "payments", n, json.dumps(body)]

    ingest([relayed(n) for n in (1, 2, 4)])
    assert post(client, risk["token"], {"events": [risk_event(n) for n in (1, 2)]}).status_code == 200
    ingest([relayed(3), relayed(5)])  # the relay's late event fills its hole: chain.ingest has no gap check
    assert post(client, risk["token"], {"events": [risk_event(n) for n in (3, 4, 5)]}).status_code == 200
    ingest([relayed(n) for n in range(6, 9)])

    # then one chain, both services gapless, and audit_verify --strict-services passes
    assert AuditEvent.objects.count() == 13
    assert [n for n, _ in chained("payments")] == list(range(1, 9))
    strictly_verified()


# ------------------------------------------------------------------------------------ concurrency


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_concurrent_requests_of_one_service_leave_no_gap_and_no_duplicate(risk, live_server):
    # given two senders (threads, each its own connection) with interleaved batches of one service: batch k holds
    # numbers 10k+1..10k+10; each sender retries a refused batch until it is accepted, as a relay does
    bearer = risk["token"]
    batches = [[risk_event(n) for n in range(10 * k + 1, 10 * k + 11)] for k in range(20)]
    outcomes: dict[str, list[int]] = {"gap": [], "ok": [], "other": []}
    lock = threading.Lock()
    # The odd sender's first batch (11-20) goes first, so at least one gap is certain however the threads are
    # scheduled (on a busy machine they may otherwise take turns and never meet); the even one starts after it.
    first_sent = threading.Event()

    def sender(mine: list[list[dict[str, Any]]], wait_for_first: bool) -> None:
        if wait_for_first:
            first_sent.wait(timeout=30)
        with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {bearer}"}, timeout=30) as http:
            pending = list(mine)
            for _ in range(400):
                if not pending:
                    return
                try:
                    response = http.post(INGEST, json={"events": pending[0]})
                finally:
                    first_sent.set()
                with lock:
                    if response.status_code == 200:
                        outcomes["ok"].append(response.json()["inserted"])
                    elif response.json().get("code") == "audit_sequence_gap":
                        outcomes["gap"].append(response.json()["expected_seq"])
                    else:
                        outcomes["other"].append(response.status_code)
                if response.status_code == 200:
                    pending.pop(0)
                else:
                    # another sender holds the batch before: send the overlapping window from where the log is
                    expected = response.json()["expected_seq"]
                    pending = [[risk_event(n) for n in range(expected, expected + 10)]] + [
                        b for b in pending if b[-1]["service_seq"] >= expected + 10
                    ]

    even, odd = batches[0::2], batches[1::2]
    threads = [threading.Thread(target=sender, args=(part, part is even)) for part in (even, odd)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)

    # then every number 1..200 is chained exactly once, in order, with no gap, and the chain verifies
    assert outcomes["other"] == []
    assert outcomes["gap"], "the senders never got in each other's way"
    rows = chained()
    assert [n for n, _ in rows] == list(range(1, 201))
    assert sum(outcomes["ok"]) == 200
    strictly_verified()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_two_senders_racing_for_the_same_places_one_wins_the_other_is_told(risk, live_server):
    # given two senders, in each round sending the same ten numbers under their own ids at the same moment
    bearer = risk["token"]
    rounds = 12
    barrier = threading.Barrier(2)
    statuses: dict[str, list[tuple[int, str]]] = {"a": [], "b": []}

    def sender(name: str) -> None:
        with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {bearer}"}, timeout=30) as http:
            for k in range(rounds):
                batch = [risk_event(n, id=f"evt_{name}_{n}") for n in range(10 * k + 1, 10 * k + 11)]
                barrier.wait(timeout=30)
                response = http.post(INGEST, json={"events": batch})
                statuses[name].append((response.status_code, response.json().get("code", "")))

    threads = [threading.Thread(target=sender, args=(name,)) for name in statuses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)

    # then in every round exactly one is chained and the other answered 409 audit_sequence_conflict (never a
    # silent 200 with its events set aside), and each place holds one event of the round's winner
    for k in range(rounds):
        pair = sorted([statuses["a"][k], statuses["b"][k]])
        assert pair == [(200, ""), (409, "audit_sequence_conflict")], (k, pair)
    rows = chained()
    assert [n for n, _ in rows] == list(range(1, 10 * rounds + 1))
    for k in range(rounds):
        assert len({event_id.split("_")[1] for n, event_id in rows if 10 * k < n <= 10 * k + 10}) == 1
    assert AuditRejected.objects.count() == 10 * rounds
    strictly_verified()


# ------------------------------------------------------------------------------------ the schema


def kit_events() -> list[dict[str, Any]]:
    """Events as the Python kit writes and the relay expands them (audit_event + event_expand of the relay's row)."""
    bodies = [
        audit_event("payments.payment.created", object_type="payment", object_id="pay_1", metadata={"amount": 1200}),
        audit_event(
            "ledger.account.updated",
            outcome="failure",
            object_type="account",
            object_id="acc_1",
            changes={"status": ["open", "frozen"], "secret": ["a", "b"]},
            actor={"type": "user", "id": "7", "display": "alice"},
            request_id="req_01",
        ),
        audit_event("portal.client.created", actor={"type": "system", "id": "beat", "display": "beat"}),
    ]
    return [event_expand([f"evt_k{n}", "payments", n + 1, json.dumps(b)]) for n, b in enumerate(bodies)]


@pytest.mark.django_db
def test_the_schema_is_public_cacheable_and_describes_what_the_kit_writes(client):
    response = client.get(SCHEMA)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/schema+json")
    assert "public" in response["Cache-Control"]
    assert "max-age" in response["Cache-Control"]
    schema = response.json()
    jsonschema.Draft202012Validator.check_schema(schema)
    event_validator = jsonschema.Draft202012Validator(
        {**schema["$defs"]["event"], "$defs": schema["$defs"]}, format_checker=jsonschema.FormatChecker()
    )
    request_validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    events = kit_events()
    for event in events:
        assert not list(event_validator.iter_errors(event)), event
    assert not list(request_validator.iter_errors({"events": events}))
    assert not list(request_validator.iter_errors({"events": [risk_event(1)]}))


BROKEN = {
    "no-action": (lambda e: {k: v for k, v in e.items() if k != "action"}, "action"),
    "outcome": (lambda e: {**e, "outcome": "maybe"}, "outcome"),
    "actor-type": (lambda e: {**e, "actor": {"type": "robot", "id": "r"}}, "robot"),
    "seq-zero": (lambda e: {**e, "service_seq": 0}, "service_seq"),
    "seq-a-string": (lambda e: {**e, "service_seq": "3"}, "service_seq"),
    "not-a-time": (lambda e: {**e, "occurred_at": "yesterday"}, "occurred_at"),
    "id-too-long": (lambda e: {**e, "id": "evt_" + "x" * 70}, "id"),
    "metadata-a-list": (lambda e: {**e, "metadata": [1]}, "metadata"),
    "object-missing": (lambda e: {k: v for k, v in e.items() if k != "object"}, "object"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("kind", list(BROKEN))
def test_the_schema_refuses_what_the_sequencer_would_park(client, kind):
    schema = client.get(SCHEMA).json()
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    breaking, named = BROKEN[kind]

    errors = list(validator.iter_errors({"events": [breaking(kit_events()[0])]}))

    # then it is refused, for that reason (the path or the message names what is wrong)
    assert errors
    assert any(named in [*map(str, e.absolute_path), e.message] or named in e.message for e in errors), errors
    assert list(validator.iter_errors({"events": [kit_events()[0]], "extra": 1}))


# ------------------------------------------------------------------------------------ end to end over real HTTP


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_a_service_registers_gets_a_token_and_ingests_over_real_http(live_server):
    # given the risk service's machine client, as demo_setup grants it
    machine = machine_client(audiences=["portal"], scopes=["catalog:register", "audit:ingest"], name="risk-live")
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        # when it exchanges its secret at the token endpoint (form-encoded, like any OAuth client)
        answer = http.post(TOKEN, data=machine.token_request("portal", scope="catalog:register audit:ingest"))
        assert answer.status_code == 200, answer.text
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        # before it registered: refused
        early = http.post(INGEST, json={"events": [risk_event(1)]}, headers=headers)
        assert (early.status_code, early.json()["code"]) == (403, "audit_service_unregistered")
        # registers its manifest in the catalog, then relays its outbox
        registered = http.put("/api/v1/catalog/services/risk", json={"display_name": "Risk"}, headers=headers)
        assert registered.status_code in (200, 201), registered.text
        first = http.post(INGEST, json={"events": [risk_event(n) for n in (1, 2, 3)]}, headers=headers)
        replay = http.post(INGEST, json={"events": [risk_event(n) for n in (1, 2, 3)]}, headers=headers)
        gap = http.post(INGEST, json={"events": [risk_event(5)]}, headers=headers)
        schema = http.get(SCHEMA)

    # then
    assert first.status_code == 200, first.text
    assert first.json()["inserted"] == 3
    assert replay.json()["duplicates"] == 3
    assert gap.status_code == 409
    assert gap.headers["content-type"] == "application/problem+json"
    assert (gap.json()["code"], gap.json()["expected_seq"], gap.json()["received_seq"]) == ("audit_sequence_gap", 4, 5)
    assert gap.json()["request_id"] == gap.headers["x-request-id"]
    assert schema.status_code == 200
    assert schema.json()["$defs"]["event"]["properties"]["service_seq"]["minimum"] == 1
    assert [n for n, _ in chained()] == [1, 2, 3]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audit_rejected")
        assert cursor.fetchone()[0] == 2  # the early event and the gap's
