"""Every ledger mutation, and every refusal, leaves exactly one audit event in the outbox, in the same database
transaction as the change (refusals in their own transaction, committed although the refused write was not).

Most tests run without pytest-django's wrapping transaction (``transaction=True``), as a request does in
production, and read the outbox from a second connection: only committed events count.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.db import connections
from django.db.models import F
from django.utils import timezone

from services.kit.db import Pipeline
from services.kit.models import OutboxEvent
from services.ledger.models import Account, Posting, Transaction
from services.ledger.services import settlement
from tests.ledger.conftest import LedgerAPI

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("_relay_off")]

OUTBOX = OutboxEvent._meta.db_table


@pytest.fixture
def _relay_off(settings: Any) -> None:
    settings.ATRIUM_OUTBOX_RELAY = "off"


def committed(action: str | None = None, outcome: str | None = None) -> list[dict[str, Any]]:
    """The audit events another session sees (committed), oldest first, filtered by action and outcome."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute(f"SELECT payload::text FROM {OUTBOX} WHERE topic = 'audit' ORDER BY created_at, id")
            payloads = [json.loads(row[0]) for row in cursor.fetchall()]
    finally:
        other.close()
    return [
        p
        for p in payloads
        if (action is None or p["action"] == action) and (outcome is None or p["outcome"] == outcome)
    ]


def clear() -> None:
    OutboxEvent.objects.all().delete()


def assert_from_client(event: dict[str, Any], response: Any) -> None:
    """The actor is the machine client of the token, and the event carries the request's id."""
    assert event["actor"] == {"type": "client", "id": "cli_test", "display": "cli_test"}
    assert event["request_id"] == response["X-Request-ID"]
    assert event["request_id"]


def items(world: dict[str, Any], customer: dict[str, Any], count: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "reference": f"{prefix}-{n}",
            "postings": [
                {"account": world["id"], "direction": "debit", "amount": 1},
                {"account": customer["id"], "direction": "credit", "amount": 1},
            ],
        }
        for n in range(count)
    ]


# ------------------------------------------------------------------------------------------- accounts


def test_an_account_creation_is_audited_once_with_its_terms(api: LedgerAPI) -> None:
    response = api.post(
        "accounts",
        {"name": "alice", "code": "alice-1", "currency": "EUR", "normal_balance": "debit", "overdraft_limit": 50},
    )
    assert response.status_code == 201

    (event,) = committed()
    assert (event["action"], event["outcome"]) == ("ledger.account.created", "success")
    assert event["object"] == {"type": "account", "id": response.json()["id"]}
    assert_from_client(event, response)
    assert (
        event["metadata"].items()
        >= {
            "code": "alice-1",
            "currency": "EUR",
            "normal_balance": "debit",
            "overdraft_limit": 50,
            "allow_negative": False,
        }.items()
    )


def test_an_account_change_is_audited_with_before_and_after(api: LedgerAPI) -> None:
    account = api.account(name="alice", metadata={"tier": "gold"})
    clear()

    response = api.patch(f"accounts/{account['id']}", {"name": "Alice", "metadata": {"tier": "silver"}})
    frozen = api.patch(f"accounts/{account['id']}", {"status": "frozen"})

    assert (response.status_code, frozen.status_code) == (200, 200)
    first, second = committed("ledger.account.changed")
    assert len(committed()) == 2
    assert first["outcome"] == "success"
    assert first["object"] == {"type": "account", "id": account["id"]}
    assert first["changes"] == {"name": ["alice", "Alice"], "metadata": [{"tier": "gold"}, {"tier": "silver"}]}
    assert second["changes"] == {"status": ["open", "frozen"]}
    assert_from_client(first, response)
    assert_from_client(second, frozen)


def test_account_refusals_are_committed_as_failures(api: LedgerAPI, funded: tuple[dict, dict]) -> None:
    _world, customer = funded
    api.account(name="first", code="shared")
    clear()

    duplicate = api.post(
        "accounts", {"name": "second", "code": "shared", "currency": "EUR", "normal_balance": "credit"}
    )
    not_empty = api.patch(f"accounts/{customer['id']}", {"status": "closed"})
    missing = api.patch("accounts/acc_00000000000000000000000000", {"name": "x"})

    assert (duplicate.status_code, not_empty.status_code, missing.status_code) == (409, 409, 404)
    assert Account.objects.filter(code="shared").count() == 1
    assert Account.objects.get(pk=customer["id"]).status == "open"
    (refused_create,) = committed("ledger.account.created")
    assert refused_create["outcome"] == "failure"
    assert refused_create["metadata"]["code"] == "account_code_taken"
    assert refused_create["metadata"]["account_code"] == "shared"
    assert_from_client(refused_create, duplicate)
    closing, absent = committed("ledger.account.changed")
    assert (closing["outcome"], closing["metadata"]["code"]) == ("failure", "account_not_empty")
    assert closing["object"] == {"type": "account", "id": customer["id"]}
    assert (absent["outcome"], absent["metadata"]["code"]) == ("failure", "not_found")
    assert_from_client(closing, not_empty)
    assert len(committed()) == 3


# ------------------------------------------------------------------------------------------ transfers


def test_a_transfer_is_audited_once_a_refusal_is_committed_and_a_replay_is_not_audited(
    api: LedgerAPI, funded: tuple[dict, dict]
) -> None:
    world, customer = funded
    clear()

    ok = api.transfer(customer["id"], world["id"], 400, reference="pay-1", currency="EUR")
    refused = api.transfer(customer["id"], world["id"], 10_000, reference="pay-2")
    replay = api.transfer(customer["id"], world["id"], 400, reference="pay-1", currency="EUR")

    assert (ok.status_code, refused.status_code, replay.status_code) == (201, 409, 200)
    created, failed = committed()
    assert (created["action"], created["outcome"]) == ("ledger.transaction.created", "success")
    assert created["object"] == {"type": "transaction", "id": ok.json()["id"]}
    assert created["metadata"] == {
        "reference": "pay-1",
        "status": "posted",
        "amount": 400,
        "currency": "EUR",
        "accounts": sorted([world["id"], customer["id"]]),
    }
    assert_from_client(created, ok)
    assert (failed["action"], failed["outcome"]) == ("ledger.transaction.created", "failure")
    assert failed["metadata"]["code"] == "insufficient_funds"
    assert failed["metadata"]["reference"] == "pay-2"
    assert_from_client(failed, refused)
    assert not Transaction.objects.filter(reference="pay-2").exists()


def test_a_transfer_audits_in_its_last_pipeline_without_an_extra_round_trip(
    api: LedgerAPI, funded: tuple[dict, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, customer = funded
    pipelines: list[list[str]] = []
    real_run = Pipeline.run

    def run(self: Pipeline) -> None:
        pipelines.append([sql.split(" (")[0] for sql, _ in self._statements])
        real_run(self)

    monkeypatch.setattr(Pipeline, "run", run)

    assert api.transfer(world["id"], customer["id"], 7, reference="rt-1").status_code == 201

    # lock and look up; then the writes, the audit event and the COMMIT, together
    assert len(pipelines) == 2
    assert pipelines[0][0] == "BEGIN"
    assert pipelines[1][-2:] == [f"INSERT INTO {OUTBOX}", "COMMIT"]


def test_a_hold_its_post_its_void_and_not_pending_refusals_are_audited(
    api: LedgerAPI, funded: tuple[dict, dict]
) -> None:
    world, customer = funded
    hold = api.transfer(customer["id"], world["id"], 10, reference="hold-1", pending=True).json()
    other = api.transfer(customer["id"], world["id"], 20, reference="hold-2", pending=True).json()
    assert [e["metadata"]["status"] for e in committed("ledger.transaction.created")][-2:] == ["pending", "pending"]
    clear()

    posted = api.post(f"transactions/{hold['id']}/post")
    voided = api.post(f"transactions/{other['id']}/void")
    again = api.post(f"transactions/{hold['id']}/void")
    repost = api.post(f"transactions/{other['id']}/post")

    assert [r.status_code for r in (posted, voided, again, repost)] == [200, 200, 409, 409]
    post_event, refused_post = committed("ledger.transaction.posted")
    void_event, refused_void = committed("ledger.transaction.voided")
    assert len(committed()) == 4
    assert (post_event["object"]["id"], post_event["outcome"]) == (hold["id"], "success")
    assert post_event["metadata"].items() >= {"reference": "hold-1", "status": "posted", "amount": 10}.items()
    assert_from_client(post_event, posted)
    assert (void_event["object"]["id"], void_event["outcome"]) == (other["id"], "success")
    assert void_event["metadata"]["status"] == "voided"
    assert_from_client(void_event, voided)
    for refusal, transaction_id, response in ((refused_void, hold["id"], again), (refused_post, other["id"], repost)):
        assert refusal["outcome"] == "failure"
        assert refusal["object"] == {"type": "transaction", "id": transaction_id}
        assert refusal["metadata"]["code"] == "transaction_not_pending"
        assert_from_client(refusal, response)


def test_expiry_voids_are_audited_as_the_system(api: LedgerAPI, funded: tuple[dict, dict]) -> None:
    world, customer = funded
    soon = (timezone.now() + dt.timedelta(seconds=1)).isoformat()
    holds = [
        api.transfer(customer["id"], world["id"], 5, reference=f"exp-{n}", pending=True, expires_at=soon).json()
        for n in range(2)
    ]
    clear()

    assert settlement.transactions_expire(now=timezone.now() + dt.timedelta(minutes=1)) == 2

    voided = committed()
    assert sorted(e["object"]["id"] for e in voided) == sorted(h["id"] for h in holds)
    for event in voided:
        assert (event["action"], event["outcome"]) == ("ledger.transaction.voided", "success")
        assert event["actor"]["type"] == "system"
        assert event["metadata"]["reason"] == "expired"


# -------------------------------------------------------------------------------------------- batches


def test_a_batch_of_100_audits_each_created_item_and_each_refused_item(
    api: LedgerAPI, funded: tuple[dict, dict]
) -> None:
    world, customer = funded
    clear()
    batch = items(world, customer, 100, "b")
    refused = {**batch[0], "reference": "b-broke", "postings": [{**p, "amount": 10**9} for p in batch[0]["postings"]]}
    refused["postings"][0]["account"], refused["postings"][1]["account"] = customer["id"], world["id"]

    response = api.post("transactions/batch", {"transactions": [*batch, refused, batch[3]]})

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]].count("created") == 100
    created = committed("ledger.transaction.created", "success")
    assert len(created) == 100
    ids = {r["id"] for r in response.json()["results"] if r["status"] == "created"}
    assert {e["object"]["id"] for e in created} == ids
    assert {e["request_id"] for e in created} == {response["X-Request-ID"]}
    (failure,) = committed(outcome="failure")
    assert (failure["metadata"]["reference"], failure["metadata"]["code"]) == ("b-broke", "insufficient_funds")
    assert len(committed()) == 101  # the in-batch replay of b-3 is not audited


def test_an_atomic_batch_rejection_commits_one_failure_per_item_and_nothing_else(
    api: LedgerAPI, funded: tuple[dict, dict]
) -> None:
    world, customer = funded
    clear()
    batch = items(world, customer, 3, "a")
    batch[1]["postings"] = [
        {"account": customer["id"], "direction": "debit", "amount": 10**9},
        {"account": world["id"], "direction": "credit", "amount": 10**9},
    ]

    response = api.post("transactions/batch", {"transactions": batch, "atomic": True})

    assert response.status_code == 422
    assert not Transaction.objects.filter(reference__startswith="a-").exists()
    assert committed(outcome="success") == []
    events = committed("ledger.transaction.created", "failure")
    assert len(events) == 3
    codes = {e["metadata"]["reference"]: e["metadata"]["code"] for e in events}
    assert codes == {"a-0": "batch_rejected", "a-1": "insufficient_funds", "a-2": "batch_rejected"}
    for event in events:
        assert_from_client(event, response)


def test_malformed_batch_items_are_audited_as_refused(api: LedgerAPI, funded: tuple[dict, dict]) -> None:
    world, customer = funded
    clear()
    batch = items(world, customer, 2, "m")
    malformed = {"reference": "m-bad", "postings": [{"account": world["id"], "direction": "sideways", "amount": 1}]}

    ok = api.post("transactions/batch", {"transactions": [batch[0], malformed]})
    rejected = api.post("transactions/batch", {"transactions": [batch[1], malformed], "atomic": True})

    assert (ok.status_code, rejected.status_code) == (200, 422)
    assert Transaction.objects.filter(reference="m-0").exists()
    assert not Transaction.objects.filter(reference="m-1").exists()
    (created,) = committed("ledger.transaction.created", "success")
    assert created["metadata"]["reference"] == "m-0"
    failures = [
        (e["metadata"]["reference"], e["metadata"]["code"], e["request_id"]) for e in committed(outcome="failure")
    ]
    assert sorted(failures) == sorted(
        [
            ("m-bad", "validation_error", ok["X-Request-ID"]),
            ("m-1", "batch_rejected", rejected["X-Request-ID"]),
            ("m-bad", "validation_error", rejected["X-Request-ID"]),
        ]
    )


def test_a_large_batch_audits_with_one_copy_and_commits_with_it(api: LedgerAPI, funded: tuple[dict, dict]) -> None:
    world, customer = funded
    clear()

    response = api.post("transactions/batch", {"transactions": items(world, customer, 1000, "big")})

    assert response.status_code == 200
    assert len(committed("ledger.transaction.created", "success")) == 1000


# ---------------------------------------------------------------------------------------- no bypass


def test_no_write_path_bypasses_the_audit_trail(api: LedgerAPI, funded: tuple[dict, dict]) -> None:
    world, customer = funded
    expected_failures = 0
    for n in range(5):
        assert api.transfer(world["id"], customer["id"], n + 1, reference=f"mix-{n}").status_code == 201
    assert api.post("transactions/batch", {"transactions": items(world, customer, 12, "mixb")}).status_code == 200
    holds = [
        api.transfer(customer["id"], world["id"], 3, reference=f"mix-hold-{n}", pending=True).json() for n in range(3)
    ]
    assert api.post(f"transactions/{holds[0]['id']}/post").status_code == 200
    assert api.post(f"transactions/{holds[1]['id']}/void").status_code == 200
    assert api.post(f"transactions/{holds[1]['id']}/post").status_code == 409
    expected_failures += 1
    assert api.transfer(customer["id"], world["id"], 10**9, reference="mix-broke").status_code == 409
    expected_failures += 1
    assert api.transfer(world["id"], customer["id"], 1, reference="mix-0").status_code == 200  # replay
    late = api.account(name="late")
    assert api.patch(f"accounts/{late['id']}", {"name": "later"}).status_code == 200
    assert api.patch(f"accounts/{late['id']}", {"status": "closed"}).status_code == 200
    changes = 2
    settlement.transaction_post(transaction_id=holds[2]["id"])

    posted_later = Transaction.objects.filter(status="posted", posted_at__gt=F("created_at")).count()
    expected = (
        Transaction.objects.count()
        + posted_later
        + Transaction.objects.filter(status="voided").count()
        + Account.objects.count()
        + changes
    )
    # Every committed write to the ledger's tables was made by a transaction that also wrote an audit event,
    assert writers_without_audit_events() == []
    # and there is one event per mutation (and per refusal).
    assert posted_later == 2
    assert len(committed(outcome="success")) == expected
    assert OutboxEvent.objects.filter(topic="audit").count() == expected + expected_failures


def writers_without_audit_events() -> list[str]:
    """Transaction ids (xmin) of the current rows of accounts, transactions and postings that no outbox row shares."""
    tables = [Account._meta.db_table, Transaction._meta.db_table, Posting._meta.db_table]
    union = " UNION ".join(f"SELECT xmin::text AS x FROM {t}" for t in tables)
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute(f"{union} EXCEPT SELECT xmin::text FROM {OUTBOX}")
            return [row[0] for row in cursor.fetchall()]
    finally:
        other.close()
