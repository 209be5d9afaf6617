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
