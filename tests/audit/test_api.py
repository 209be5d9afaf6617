"""The audit REST API: filters, keyset pagination without counts, proofs, heads, export — and reads audited."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from portal.audit import standalone_verifier as verifier
from portal.audit.chain import ingest
from portal.audit.heads import head_sign, public_key_pem
from portal.audit.models import AuditEvent, AuditHead
from portal.identity import services as identity
from services.kit.models import OutboxEvent
from tests.audit.test_chain import make_event
from tests.portal.factories import machine_client, user_with_role
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/audit/events"


@pytest.fixture(autouse=True)
def _setup(settings, tmp_path):
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.ATRIUM_OUTBOX_RELAY = "off"


@pytest.fixture
def log():
    """30 events from three services; every fifth a failure, some with changes."""
    events = []
    for n in range(30):
        service = ("ledger", "payments", "portal")[n % 3]
        extra = {"id": f"evt_{n}", "request_id": f"req_{n // 2}"}
        if n % 5 == 0:
            extra["outcome"] = "failure"
        if service == "portal":
            extra.update(action="portal.client.created", object={"type": "client", "id": f"cli_{n}"})
            extra["changes"] = {"name": ["old", "new"]}
        events.append(make_event(service, n // 3 + 1, **extra))
    ingest(events)


@pytest.fixture
def auditor(client):
    client.force_login(user_with_role("auditor"))
    return client


def walk(client, params: dict) -> list[dict]:
    response = client.get(EVENTS, {**params, "limit": 4})
    found = []
    while True:
        assert response.status_code == 200, response.content
        page = response.json()
        found.extend(page["results"])
        if not page["next"]:
            return found
        response = client.get(page["next"])


def test_pagination_walks_everything_once_newest_first_without_counting(auditor, log):
    with CaptureQueriesContext(connection) as queries:
        found = walk(auditor, {})
    assert [e["seq"] for e in found] == list(range(30, 0, -1))
    assert not [q["sql"] for q in queries.captured_queries if "count(" in q["sql"].lower()]
    first = found[-1]
    assert first["hash"] == bytes(AuditEvent.objects.get(seq=1).hash).hex()
    assert first["actor"] == {"type": "client", "id": "cli_1", "display": "cli_1"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"service": "payments"}, {n for n in range(30) if n % 3 == 1}),
        ({"action": "portal.client"}, {n for n in range(30) if n % 3 == 2}),
        ({"action": "ledger.transaction"}, {n for n in range(30) if n % 3 != 2}),
        ({"outcome": "failure"}, {n for n in range(30) if n % 5 == 0}),
        ({"request_id": "req_3"}, {6, 7}),
        ({"object_type": "client", "object_id": "cli_5"}, {5}),
        (
            {"actor": "cli_1", "service": "ledger", "outcome": "success"},
            {n for n in range(30) if n % 15 in (3, 6, 9, 12)},
        ),
        ({"occurred_after": "2026-11-28T09:00:00Z", "occurred_before": "2026-11-28T11:00:00Z"}, set(range(30))),
        ({"occurred_after": "2026-11-28T10:00:01Z"}, set()),
    ],
)
def test_filters(auditor, log, params, expected):
    assert {int(e["id"].split("_")[1]) for e in walk(auditor, params)} == expected


def test_bad_filters_are_problems_not_errors(auditor, log):
    assert_problem(auditor.get(EVENTS, {"occurred_after": "yesterday"}), 400, "validation_error")
    assert_problem(auditor.get(EVENTS, {"outcome": "maybe"}), 400, "validation_error")
    assert_problem(auditor.get("/api/v1/audit/export", {"format": "xml"}), 400, "validation_error")
    assert_problem(auditor.get(f"{EVENTS}/evt_nope"), 404, "not_found")


def test_only_auditors_and_audit_read_clients_may_read(client, log):
    assert_problem(client.get(EVENTS), 401, "not_authenticated")
    client.force_login(user_with_role("viewer"))
    assert_problem(client.get(EVENTS), 403, "role_required")
    client.logout()

    reader = machine_client(audiences=["portal"], scopes=["audit:read"])
    other = machine_client(audiences=["portal"], scopes=["portal:read"])

    def bearer(c):
        token = identity.token_issue(
            grant_type="client_credentials", client_id=c.client.id, client_secret=c.secret, audience="portal"
        ).access_token
        return {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    assert client.get(EVENTS, **bearer(reader)).status_code == 200
    assert_problem(client.get(EVENTS, **bearer(other)), 403, "insufficient_scope")
    listed = OutboxEvent.objects.filter(payload__action="audit.events.listed").last()
    assert listed.payload["actor"] == {"type": "client", "id": reader.client.id, "display": reader.client.id}


def test_a_proof_verifies_standalone_and_heads_are_consistent(auditor, log):
    head_sign()
    ingest([make_event("ledger", 100, id="evt_late")])

    document = auditor.get(f"{EVENTS}/evt_7/proof").json()
    auditor.post("/api/v1/audit/heads")  # evt_late is newer than the last head: sign one to prove it
    late = auditor.get(f"{EVENTS}/evt_late/proof").json()
    heads = auditor.get("/api/v1/audit/heads").json()["results"]
    pem = auditor.get("/api/v1/audit/public-key")

    assert verifier.check_proof(document, public_key_pem()) == []
    assert verifier.check_proof(late, pem.content) == []
    assert late["head"]["tree_size"] == 31
    assert [h["tree_size"] for h in heads] == [31, 30]
    assert verifier.check_heads(heads, pem.content) == []
    assert pem["Content-Type"] == "application/x-pem-file"


def test_a_proof_of_an_event_newer_than_the_latest_head_signs_nothing(auditor, log):
    head_sign()
    ingest([make_event("ledger", 100, id="evt_late")])

    response = auditor.get(f"{EVENTS}/evt_late/proof")

    assert_problem(response, 409, "event_not_signed")
    assert list(AuditHead.objects.values_list("tree_size", flat=True)) == [30]


def test_signing_an_empty_log_is_refused(auditor):
    response = auditor.post("/api/v1/audit/heads")

    assert_problem(response, 400, "audit_log_empty")
    assert not AuditHead.objects.exists()


def test_heads_can_be_signed_on_demand(auditor, log):
    first = auditor.post("/api/v1/audit/heads")
    again = auditor.post("/api/v1/audit/heads")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["tree_size"] == 30


def test_export_streams_jsonl_and_csv(auditor, log):
    jsonl = auditor.get("/api/v1/audit/export", {"format": "jsonl", "service": "ledger"})
    lines = b"".join(jsonl.streaming_content).decode().splitlines()
    stored = list(AuditEvent.objects.filter(service="ledger").order_by("seq").values_list("canonical", flat=True))
    assert lines == stored
    assert "attachment" in jsonl["Content-Disposition"]

    exported = auditor.get("/api/v1/audit/export", {"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert len(rows) == 30
    assert json.loads(rows[2]["changes"]) == {"name": ["old", "new"]}


def test_every_read_is_audited(auditor, log):
    head_sign()
    auditor.get(EVENTS, {"service": "ledger"})
    auditor.get(f"{EVENTS}/evt_1")
    auditor.get(f"{EVENTS}/evt_1/proof")
    b"".join(auditor.get("/api/v1/audit/export", {"format": "csv"}).streaming_content)
    auditor.get("/api/v1/audit/heads")

    actions = [
        e.payload["action"]
        for e in OutboxEvent.objects.order_by("created_at", "id")
        if e.payload["action"].startswith("audit.")
    ]
    assert actions == [
        "audit.events.listed",
        "audit.event.viewed",
        "audit.proof.requested",
        "audit.events.exported",
        "audit.heads.listed",
    ]
    listed = OutboxEvent.objects.filter(payload__action="audit.events.listed").get().payload
    assert listed["metadata"]["filters"] == {"service": "ledger"}
    assert listed["actor"]["type"] == "user"
