"""Every ledger mutation, and every refusal, leaves exactly one audit event in the outbox."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from services.kit.models import OutboxEvent
from services.ledger import services
from services.ledger.models import Transaction

pytestmark = pytest.mark.usefixtures("_relay_off")


@pytest.fixture
def _relay_off(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"


def events(action: str | None = None) -> list[dict]:
    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    payloads = [r.payload for r in rows]
    return [p for p in payloads if action is None or p["action"] == action]


def test_account_creation_and_changes_are_audited_with_the_client_as_actor(api):
    account = api.account(name="alice", code="alice-1")
    assert api.patch(f"accounts/{account['id']}/", {"name": "Alice", "status": "frozen"}).status_code == 200

    (created,) = events("ledger.account.created")
    (changed,) = events("ledger.account.changed")
    assert created["object"] == {"type": "account", "id": account["id"]}
    assert created["actor"]["type"] == "client"
    assert created["actor"]["id"] == "cli_test"
    assert created["request_id"].startswith("req_")
    assert created["metadata"]["code"] == "alice-1"
    assert changed["changes"] == {"name": ["alice", "Alice"], "status": ["open", "frozen"]}


def test_a_transfer_and_its_refusal_are_audited(api, funded):
    world, customer = funded
    OutboxEvent.objects.all().delete()

    ok = api.transfer(customer["id"], world["id"], 400, reference="pay-1")
    refused = api.transfer(customer["id"], world["id"], 10_000, reference="pay-2")
    replay = api.transfer(customer["id"], world["id"], 400, reference="pay-1")

    assert (ok.status_code, refused.status_code, replay.status_code) == (201, 409, 200)
    created = events("ledger.transaction.created")
    assert [(e["outcome"], e["metadata"]["reference"]) for e in created] == [("success", "pay-1"), ("failure", "pay-2")]
    assert created[0]["object"]["id"] == ok.json()["id"]
    assert created[0]["metadata"]["amount"] == 400
    assert created[1]["metadata"]["code"] == "insufficient_funds"


def test_hold_post_void_and_not_pending_refusals(api, funded):
    world, customer = funded
    hold = api.transfer(customer["id"], world["id"], 10, reference="hold-1", pending=True).json()
    other = api.transfer(customer["id"], world["id"], 20, reference="hold-2", pending=True).json()

    assert api.post(f"transactions/{hold['id']}/post").status_code == 200
    assert api.post(f"transactions/{other['id']}/void").status_code == 200
    assert api.post(f"transactions/{hold['id']}/void").status_code == 409

    posted = events("ledger.transaction.posted")
    voided = events("ledger.transaction.voided")
    assert [(e["object"]["id"], e["outcome"]) for e in posted] == [(hold["id"], "success")]
    assert [(e["object"]["id"], e["outcome"]) for e in voided] == [(other["id"], "success"), (hold["id"], "failure")]
    assert voided[1]["metadata"]["code"] == "transaction_not_pending"


def test_a_batch_audits_every_item_and_an_atomic_rejection_audits_refusals_only(api, funded):
    world, customer = funded
    OutboxEvent.objects.all().delete()
    items = [
        {
            "reference": f"b-{n}",
            "postings": [
                {"account": world["id"], "direction": "debit", "amount": 1},
                {"account": customer["id"], "direction": "credit", "amount": 1},
            ],
        }
        for n in range(100)
    ]
    assert api.post("transactions/batch", {"transactions": items}).status_code == 200
    assert len(events("ledger.transaction.created")) == 100

    OutboxEvent.objects.all().delete()
    bad = {**items[0], "reference": "b-bad", "postings": [{**p, "amount": 10**9} for p in items[0]["postings"]]}
    bad["postings"][0]["account"] = customer["id"]
    bad["postings"][1]["account"] = world["id"]
    rejected = api.post("transactions/batch", {"transactions": [{**items[1], "reference": "b-x"}, bad], "atomic": True})

    assert rejected.status_code == 422
    outcomes = [(e["metadata"]["reference"], e["outcome"], e["metadata"]["code"]) for e in events()]
    assert outcomes == [("b-x", "failure", "batch_rejected"), ("b-bad", "failure", "insufficient_funds")]
    assert not Transaction.objects.filter(reference__in=["b-x", "b-bad"]).exists()


def test_expiry_voids_are_audited_as_the_system(api, funded):
    world, customer = funded
    soon = (timezone.now() + dt.timedelta(seconds=1)).isoformat()
    hold = api.transfer(customer["id"], world["id"], 5, reference="exp-1", pending=True, expires_at=soon).json()

    assert services.transactions_expire(now=timezone.now() + dt.timedelta(minutes=1)) == 1

    (voided,) = events("ledger.transaction.voided")
    assert voided["object"]["id"] == hold["id"]
    assert voided["actor"]["type"] == "system"
    assert voided["metadata"]["reason"] == "expired"


def test_no_write_path_bypasses_the_audit_trail(api, funded):
    world, customer = funded
    for n in range(5):
        api.transfer(world["id"], customer["id"], n + 1, reference=f"mix-{n}")
    held = api.transfer(customer["id"], world["id"], 3, reference="mix-hold", pending=True).json()
    api.post(f"transactions/{held['id']}/post")
    api.account(name="late")

    successes = [e for e in events() if e["outcome"] == "success"]
    created = [e for e in successes if e["action"] == "ledger.transaction.created"]
    assert len(created) == Transaction.objects.count()
    assert len(events("ledger.transaction.posted")) == 1
    assert len(events("ledger.account.created")) == 3
