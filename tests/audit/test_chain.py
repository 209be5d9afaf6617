"""The sequencer: one gapless chain, idempotent on event id, Merkle proofs that verify."""

from __future__ import annotations

import json

import pytest

from portal.audit import standalone_verifier as verifier
from portal.audit.chain import NodeSource, frontier_root, ingest
from portal.audit.heads import head_as_dict, head_sign, public_key_pem
from portal.audit.models import AuditChainState, AuditEvent, AuditRejected

pytestmark = pytest.mark.django_db


def make_event(service: str, n: int, **extra) -> dict:
    return {
        "id": f"evt_{service}_{n}",
        "service": service,
        "service_seq": n,
        "occurred_at": "2026-11-28T10:00:00.000000Z",
        "action": "ledger.transaction.created",
        "outcome": "success",
        "actor": {"type": "client", "id": "cli_1", "display": "cli_1"},
        "object": {"type": "transaction", "id": f"txn_{n}"},
        "request_id": f"req_{n}",
        "source_ip": "127.0.0.1",
        "user_agent": "test",
        "changes": {},
        "metadata": {"n": n},
        **extra,
    }


def test_events_are_chained_in_order_and_replays_are_ignored():
    first = ingest([make_event("ledger", n) for n in range(1, 6)])
    again = ingest([make_event("ledger", n) for n in range(1, 8)])

    assert (first.inserted, first.duplicates) == (5, 0)
    assert (again.inserted, again.duplicates) == (2, 5)
    rows = list(AuditEvent.objects.order_by("seq"))
    assert [r.seq for r in rows] == list(range(1, 8))
    previous = verifier.ZERO_HASH
    for row in rows:
        data = row.canonical.encode()
        assert bytes(row.prev_hash) == previous
        assert bytes(row.hash) == verifier.chain_hash(data, previous)
        assert bytes(row.leaf_hash) == verifier.leaf_hash(data)
        previous = bytes(row.hash)
    state = AuditChainState.objects.get()
    assert state.size == 7
    assert frontier_root(state.frontier) == verifier.root_from_leaves([bytes(r.leaf_hash) for r in rows])


def test_the_seq_spliced_into_the_canonical_text_is_the_top_level_one():
    # given events whose changes and metadata hold the very text the sequencer splices at
    tricky = {"nested": {"a": 1, "seq": 0, "service": "x"}, "text": ',"seq":0,"service":', "é": "ü"}
    ingest([make_event("ledger", 1), make_event("ledger", 2, metadata=tricky, changes={"seq": [0, 1]})])

    # then each stored text is exactly the canonical JSON of the event with its own seq, nested values intact
    for row in AuditEvent.objects.order_by("seq"):
        body = json.loads(row.canonical)
        assert body["seq"] == row.seq
        assert verifier.canonical(body).decode() == row.canonical
    assert json.loads(AuditEvent.objects.get(seq=2).canonical)["metadata"] == tricky


def test_malformed_and_conflicting_events_are_kept_aside_not_lost():
    ingest([make_event("ledger", 1)])
    result = ingest([{"id": "evt_bad"}, make_event("ledger", 1, id="evt_other")])

    assert (result.inserted, result.rejected) == (0, 2)
    assert AuditRejected.objects.count() == 2


def test_inclusion_proof_against_a_signed_head_verifies_standalone():
    ingest([make_event("ledger", n) for n in range(1, 14)])
    head = head_sign()
    nodes = NodeSource()
    for row in AuditEvent.objects.order_by("seq"):
        path = verifier.inclusion_path(row.seq - 1, head.tree_size, nodes)
        document = {
            "event": verifier_json(row),
            "leaf_index": row.seq - 1,
            "leaf_hash": bytes(row.leaf_hash).hex(),
            "proof": [p.hex() for p in path],
            "head": head_as_dict(head),
        }
        assert verifier.check_proof(document, public_key_pem()) == []


def verifier_json(row: AuditEvent) -> dict:
    import json

    return json.loads(row.canonical)
