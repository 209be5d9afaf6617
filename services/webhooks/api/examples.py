"""Examples in the webhooks API reference: what integrators see in /api/docs (values as real answers have them)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

ENDPOINT_ID = "ep_01m91tj5evthg5y88hn0fhqfcz"
MESSAGE_ID = "msg_01m91tj5evgh0f2v6jnfcwavj8"
ACCOUNT = "acc_01m91tj5evthg5y88hn0fhqfcz"

ENDPOINT = {
    "id": ENDPOINT_ID,
    "url": "https://hooks.merchant.example/atrium",
    "description": "Merchant 1042: settled and failed payments",
    "event_types": ["payment.settled", "payment.failed"],
    "channels": [ACCOUNT],
    "enabled": True,
    "disabled_reason": "",
    "disabled_at": None,
    "rate_limit": 50,
    "max_in_flight": 10,
    "ordered": False,
    "metadata": {"merchant": "1042"},
    "v1a": False,
    "previous_secret_expires_at": None,
    "last_success_at": "2026-12-04T09:31:00.420000Z",
    "first_failure_at": None,
    "last_error": "",
    "last_status": 200,
    "stats": {"attempts": 1204, "succeeded": 1198, "success_rate": 0.995},
    "created_at": "2026-12-01T08:00:00.000000Z",
    "updated_at": "2026-12-01T08:00:00.000000Z",
}
ENDPOINT_INPUT = {
    "url": ENDPOINT["url"],
    "description": ENDPOINT["description"],
    "event_types": ENDPOINT["event_types"],
    "channels": ENDPOINT["channels"],
    "rate_limit": 50,
    "metadata": ENDPOINT["metadata"],
}
NEW_ENDPOINT = ENDPOINT | {
    "last_success_at": None,
    "last_status": None,
    "stats": {"attempts": 0, "succeeded": 0, "success_rate": None},
}

endpoint = OpenApiExample("An endpoint", value=ENDPOINT, response_only=True)
endpoint_create = OpenApiExample("Settled and failed payments of one account", value=ENDPOINT_INPUT, request_only=True)
endpoint_create_all = OpenApiExample(
    "Every payment event, signed with Ed25519 too, in order",
    value={"url": "https://erp.example/webhooks", "event_types": ["payment.*"], "ordered": True, "v1a": True},
    request_only=True,
)
endpoint_created = OpenApiExample("The endpoint", value=NEW_ENDPOINT, response_only=True, status_codes=["201"])
endpoint_update = OpenApiExample(
    "Receive every payment event", value={"event_types": ["payment.*"], "max_in_flight": 20}, request_only=True
)
endpoint_updated = OpenApiExample(
    "The endpoint, changed",
    value=ENDPOINT | {"event_types": ["payment.*"], "max_in_flight": 20},
    response_only=True,
)
endpoint_disable = OpenApiExample("Maintenance", value={"reason": "merchant maintenance"}, request_only=True)
endpoint_disabled = OpenApiExample(
    "The endpoint, disabled",
    value=ENDPOINT
    | {"enabled": False, "disabled_reason": "merchant maintenance", "disabled_at": "2026-12-04T10:00:00.000000Z"},
    response_only=True,
)
endpoint_enabled = OpenApiExample("The endpoint, enabled", value=ENDPOINT, response_only=True)
secret = OpenApiExample(
    "The secret, during a rotation's overlap",
    value={
        "endpoint": ENDPOINT_ID,
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "previous_secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "previous_secret_expires_at": "2026-12-05T10:00:00.000000Z",
    },
    response_only=True,
)
secret_rotate = OpenApiExample("Rotate, old secret valid 1 h", value={"overlap_seconds": 3600}, request_only=True)
secret_rotated = OpenApiExample(
    "The endpoint, its previous secret signing until",
    value=ENDPOINT | {"previous_secret_expires_at": "2026-12-04T11:00:00.000000Z"},
    response_only=True,
)
public_key = OpenApiExample(
    "The Ed25519 public key",
    value={"endpoint": ENDPOINT_ID, "public_key": "whpk_iZcHBfMmNTBDVLdhSJuM28zCqhA4LbGAgoNCfOtnkn0="},
    response_only=True,
)

RECOVERY = {
    "id": "rcv_01m91tj5ew2c6x0yq7k3p8d4rb",
    "endpoint": ENDPOINT_ID,
    "since": "2026-12-03T00:00:00Z",
    "until": "2026-12-04T10:00:00.000000Z",
    "state": "queued",
    "recovered": 0,
    "requested_by": {"type": "client", "id": "cli_operations", "display": "cli_operations"},
    "created_at": "2026-12-04T10:00:00.000000Z",
    "updated_at": "2026-12-04T10:00:00.000000Z",
}
recover = OpenApiExample(
    "Everything that failed since yesterday", value={"since": "2026-12-03T00:00:00Z"}, request_only=True
)
recovery_queued = OpenApiExample("The recovery, queued", value=RECOVERY, response_only=True, status_codes=["202"])
recovery = OpenApiExample(
    "A finished recovery",
    value=RECOVERY | {"state": "done", "recovered": 312, "updated_at": "2026-12-04T10:00:02.100000Z"},
    response_only=True,
)

PAYMENT_DATA = {
    "id": "pay_01m91tj5ev42na01t62vyy23q9",
    "status": "settled",
    "amount": 1250,
    "currency": "EUR",
    "source_account": ACCOUNT,
    "destination_account": "acc_01m91tj5ew2c6x0yq7k3p8d4rb",
}
EVENT_TYPE = {
    "name": "payment.settled",
    "description": "A payment was settled: the money moved in the ledger.",
    "schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["id", "status", "amount", "currency"],
        "properties": {"id": {"type": "string"}, "status": {"const": "settled"}, "amount": {"type": "integer"}},
    },
    "example": PAYMENT_DATA,
    "archived": False,
    "created_at": "2026-12-01T00:00:00.000000Z",
}
event_type = OpenApiExample("An event type", value=EVENT_TYPE, response_only=True)

MESSAGE = {
    "id": MESSAGE_ID,
    "event_id": "evt_01m91tj5evb16g3wrkrk6xt9rh",
    "type": "payment.settled",
    "channels": [ACCOUNT, "acc_01m91tj5ew2c6x0yq7k3p8d4rb"],
    "data": PAYMENT_DATA,
    "timestamp": "2026-12-04T09:31:00.410000Z",
    "source": "payments",
    "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
    "object_id": PAYMENT_DATA["id"],
    "created_at": "2026-12-04T09:31:00.430000Z",
}
DELIVERY = {
    "endpoint": ENDPOINT_ID,
    "state": "succeeded",
    "attempts": 1,
    "next_attempt_at": "2026-12-04T09:31:00.430000Z",
    "last_status": 200,
    "last_error": "",
    "succeeded_at": "2026-12-04T09:31:00.480000Z",
    "created_at": "2026-12-04T09:31:00.430000Z",
    "updated_at": "2026-12-04T09:31:00.480000Z",
}
message = OpenApiExample("A message", value=MESSAGE, response_only=True)
message_detail = OpenApiExample(
    "A message and its deliveries", value=MESSAGE | {"deliveries": [DELIVERY]}, response_only=True
)
message_create = OpenApiExample(
    "An event of your own type",
    value={
        "type": "payment.settled",
        "data": PAYMENT_DATA,
        "channels": [ACCOUNT],
        "event_id": "order-7731-settled",
    },
    request_only=True,
)
message_created = OpenApiExample(
    "The message, accepted for delivery",
    value=MESSAGE | {"event_id": "order-7731-settled", "source": "cli_merchant_backend", "channels": [ACCOUNT]},
    response_only=True,
    status_codes=["202"],
)
resend = OpenApiExample("To one endpoint", value={"endpoint": ENDPOINT_ID}, request_only=True)
resent = OpenApiExample(
    "The delivery, pending again",
    value=DELIVERY
    | {"state": "pending", "attempts": 0, "last_status": 500, "last_error": "status", "succeeded_at": None},
    response_only=True,
    status_codes=["202"],
)
attempt = OpenApiExample(
    "A failed attempt",
    value={
        "id": 884213,
        "message": MESSAGE_ID,
        "endpoint": ENDPOINT_ID,
        "number": 2,
        "at": "2026-12-04T09:31:05.520000Z",
        "duration_ms": 112,
        "status_code": 500,
        "response_body": '{"error": "database unavailable"}',
        "error": "status",
        "trigger": "scheduled",
        "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
    },
    response_only=True,
)
