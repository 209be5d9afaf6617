"""Examples in the portal's audit API reference (values as real answers have them)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

_HASH = "9f2c4b1e0d7a6c5b4a3928171605f4e3d2c1b0a99887766554433221100ffeed"
EVENT = {
    "seq": 1842,
    "id": "evt_01m91tj5evb16g3wrkrk6xt9rh",
    "service": "payments",
    "service_seq": 611,
    "occurred_at": "2026-12-04T09:31:00.410000Z",
    "recorded_at": "2026-12-04T09:31:00.620000Z",
    "actor": {"type": "client", "id": "cli_01m91tj5evb16g3wrkrk6xt9rh", "display": "shop-backend"},
    "action": "payments.payment.settled",
    "outcome": "success",
    "object": {"type": "payment", "id": "pay_01m91tj5ev42na01t62vyy23q9"},
    "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
    "source_ip": "10.0.4.17",
    "user_agent": "shop-backend/2.3",
    "changes": {"status": ["processing", "settled"]},
    "metadata": {"ledger_transaction": "txn_01m91tj5evgh0f2v6jnfcwavj8"},
    "hash": _HASH,
    "prev_hash": "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809",
}
HEAD = {
    "tree_size": 1900,
    "root_hash": "4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce",
    "last_hash": _HASH,
    "timestamp": "2026-12-04T09:32:00Z",
    "signature": "3q2+7w…base64 Ed25519 signature…",
    "key_id": "audit-2026-12",
}

event = OpenApiExample("A payment settled", value=EVENT, response_only=True)
proof = OpenApiExample(
    "An inclusion proof",
    value={
        "event": {"seq": 1842, "action": "payments.payment.settled", "…": "the event's canonical JSON"},
        "leaf_index": 1841,
        "leaf_hash": "5b0e8f3c2d1a…",
        "proof": ["a41f0c…", "77be21…", "0c93d5…"],
        "head": HEAD,
    },
    response_only=True,
)
heads = OpenApiExample(
    "Signed heads, newest first",
    value={
        "next": None,
        "previous": None,
        "results": [HEAD | {"previous_tree_size": 1880, "consistency_proof": ["c0ffee…", "d15ea5e…"]}],
    },
    response_only=True,
)
head = OpenApiExample("The head just signed", value=HEAD, response_only=True, status_codes=["201", "200"])
public_key = OpenApiExample(
    "The PEM public key",
    value="-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA3q2+7w…\n-----END PUBLIC KEY-----\n",
    response_only=True,
    media_type="application/x-pem-file",
)
public_keys = OpenApiExample(
    "The current key, then one retired key",
    value=(
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA3q2+7w…\n-----END PUBLIC KEY-----\n"
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAb1d4Kq…\n-----END PUBLIC KEY-----\n"
    ),
    response_only=True,
    media_type="application/x-pem-file",
)
export_jsonl = OpenApiExample(
    "JSON Lines",
    value='{"seq": 1842, "id": "evt_01m91tj5evb16g3wrkrk6xt9rh", "action": "payments.payment.settled", …}\n',
    response_only=True,
    media_type="application/x-ndjson",
)
export_csv = OpenApiExample(
    "CSV",
    value="seq,id,service,occurred_at,actor_type,actor_id,action,outcome,object_type,object_id,request_id\n"
    "1842,evt_01m91tj5evb16g3wrkrk6xt9rh,payments,2026-12-04T09:31:00.410000Z,client,cli_01m91…,"
    "payments.payment.settled,success,payment,pay_01m91…,req_01m91…\n",
    response_only=True,
    media_type="text/csv",
)

RISK_EVENT = {
    "id": "evt_01m9a2c7q0x3vd5hkbm4r8t6ye",
    "service": "risk",
    "service_seq": 42,
    "occurred_at": "2026-12-05T10:12:03.114000Z",
    "action": "risk.rules.updated",
    "outcome": "success",
    "actor": {"type": "user", "id": "7", "display": "alice"},
    "object": {"type": "risk_rules", "id": "risk"},
    "request_id": "req_01m9a2c7pzb1e0w3fq6v5n2k8d",
    "source_ip": "10.0.4.21",
    "user_agent": "Mozilla/5.0",
    "changes": {"thresholds.review": [50, 60]},
    "metadata": {"version": 3},
}
ingest_request = OpenApiExample(
    "Two events of the risk service", value={"events": [RISK_EVENT, RISK_EVENT | {
        "id": "evt_01m9a2c7r4m6s0b8tq1d2f5g7h", "service_seq": 43, "action": "risk.assessment.decided",
        "actor": {"type": "client", "id": "cli_01m91tj5evb16g3wrkrk6xt9rh", "display": "payments-service"},
        "object": {"type": "payment", "id": "pay_01m91tj5ev42na01t62vyy23q9"}, "changes": {},
        "metadata": {"assessment_id": "rsk_01m9a2c7r4", "score": 10, "decision": "allow",
                     "reasons": ["new_payee"], "rules_version": 3},
    }]},
    request_only=True,
)  # fmt: skip
ingest_result = OpenApiExample(
    "Chained",
    value={"inserted": 2, "duplicates": 0, "parked": 0, "first_seq": 1843, "last_seq": 1844},
    response_only=True,
)
ingest_gap = OpenApiExample(
    "A gap in the service's sequence",
    value={
        "type": "urn:atrium:problem:audit_sequence_gap",
        "title": "Gap in the service's audit sequence",
        "status": 409,
        "detail": "risk's audit sequence continues at 42, but the next event sent is 44: send the events from 42 on, "
        "in order.",
        "code": "audit_sequence_gap",
        "instance": "/api/v1/audit/events:ingest",
        "request_id": "req_01m9a2c7pzb1e0w3fq6v5n2k8d",
        "service": "risk",
        "expected_seq": 42,
        "received_seq": 44,
    },
    response_only=True,
    status_codes=["409"],
)
ingest_conflict = OpenApiExample(
    "A place held by another event",
    value={
        "type": "urn:atrium:problem:audit_sequence_conflict",
        "title": "Audit sequence conflict",
        "status": 409,
        "detail": "risk sequence 42 already holds the event 'evt_01m9a2c7q0x3vd5hkbm4r8t6ye', not 'evt_01m9b…'.",
        "code": "audit_sequence_conflict",
        "instance": "/api/v1/audit/events:ingest",
        "request_id": "req_01m9a2c7pzb1e0w3fq6v5n2k8d",
        "conflicts": [
            {"index": 0, "id": "evt_01m9b…", "service": "risk", "service_seq": 42,
             "recorded_id": "evt_01m9a2c7q0x3vd5hkbm4r8t6ye"},
        ],
    },
    response_only=True,
    status_codes=["409"],
)  # fmt: skip
schema = OpenApiExample(
    "The schema (abridged)",
    value={
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:atrium:audit:schema:1",
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": "#/$defs/event"}}
        },
        "$defs": {"event": {"type": "object", "required": ["id", "service", "service_seq", "…"], "…": "…"}},
    },
    response_only=True,
    media_type="application/schema+json",
)
