"""Examples in the portal's job dashboard API reference (values as real answers have them)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

TASK_ID = "5b1f0c2e-8f7a-4d1e-9c3b-2a6d7e8f9a0b"
JOB = {
    "task_id": TASK_ID,
    "name": "payments.process",
    "service": "payments",
    "queue": "payments",
    "state": "failed",
    "worker": "payments@host-1",
    "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
    "parent_id": "",
    "root_id": TASK_ID,
    "retry_of": "",
    "eta": None,
    "retries": 3,
    "seen_at": "2026-12-04T09:31:00.000000Z",
    "queued_at": "2026-12-04T09:31:00.000000Z",
    "received_at": "2026-12-04T09:31:00.010000Z",
    "started_at": "2026-12-04T09:31:00.020000Z",
    "finished_at": "2026-12-04T09:31:02.500000Z",
    "runtime_ms": 2480.0,
    "exception_type": "PaymentProcessingError",
    "exception_message": "pay_01m91tj5ev42na01t62vyy23q9: upstream_unavailable",
    "carried_requests": 0,
    "carried_objects": 0,
    "housekeeping": False,
    "periodic": "",
    "linked": False,
}
_AT = "2026-12-04T09:31:00.000000Z"

page = OpenApiExample(
    "A page of tasks",
    value={"next": "https://portal.example.com/api/v1/jobs/tasks?cursor=eyJzIjo…", "previous": None, "results": [JOB]},
    response_only=True,
)
detail = OpenApiExample(
    "A failed task",
    value=JOB
    | {
        "last_event_at": "2026-12-04T09:31:02.500000Z",
        "args": [],
        "kwargs": {"payment_id": "pay_01m91tj5ev42na01t62vyy23q9"},
        "result": "",
        "traceback": "Traceback (most recent call last): …",
        "retryable": True,
        "revocable": False,
        "timeline": [
            {"state": "queued", "at": _AT, "worker": "", "detail": {}},
            {"state": "started", "at": "2026-12-04T09:31:00.020000Z", "worker": "payments@host-1", "detail": {}},
            {"state": "failed", "at": "2026-12-04T09:31:02.500000Z", "worker": "payments@host-1", "detail": {}},
        ],
        "relatives": {"parent": None, "children": [], "retry_of": None, "retried_as": []},
        "carried": {"request_ids": [], "object_ids": [], "requests_total": 0, "objects_total": 0},
    },
    response_only=True,
)
retried = OpenApiExample(
    "Published again",
    value={"task_id": "0e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a", "retry_of": TASK_ID},
    response_only=True,
    status_codes=["202"],
)
revoke = OpenApiExample("Revoke and stop it if running", value={"terminate": True}, request_only=True)
revoked = OpenApiExample(
    "Revoked", value={"task_id": TASK_ID, "terminate": True}, response_only=True, status_codes=["202"]
)
bulk_retry = OpenApiExample(
    "Retry the payments failures of the last hour",
    value={"state": "failed", "queue": "payments", "since": "2026-12-04T08:30:00Z"},
    request_only=True,
)
bulk_retried = OpenApiExample(
    "One retried, one skipped",
    value={
        "retried": {TASK_ID: "0e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"},
        "skipped": {"7c6b5a49-0e8d-4382-9170-6f5e4d3c2b1a": "already retried"},
    },
    response_only=True,
    status_codes=["202"],
)
failures = OpenApiExample(
    "Failures grouped",
    value={
        "results": [
            {
                "exception_type": "PaymentProcessingError",
                "name": "payments.process",
                "count": 12,
                "last_seen": "2026-12-04T09:31:02.500000Z",
                "example_task_id": TASK_ID,
            }
        ]
    },
    response_only=True,
)
stats = OpenApiExample(
    "The last hour by queue",
    value={
        "window": "1h",
        "group_by": "queue",
        "since": "2026-12-04T08:31:00.000000Z",
        "results": [
            {
                "key": "payments",
                "total": 5210,
                "states": {"succeeded": 5198, "failed": 12},
                "runtime_ms_p50": 38.0,
                "runtime_ms_p95": 210.5,
            }
        ],
    },
    response_only=True,
)
throughput = OpenApiExample(
    "Per minute",
    value={
        "since": "2026-12-04T09:30:00Z",
        "until": "2026-12-04T09:32:00Z",
        "bucket_minutes": 1,
        "results": [
            {
                "bucket": "2026-12-04T09:30:00Z",
                "queue": "payments",
                "queued": 88,
                "started": 88,
                "succeeded": 87,
                "failed": 1,
                "retried": 1,
            }
        ],
    },
    response_only=True,
)
queues = OpenApiExample(
    "Queues now",
    value={"results": [{"name": "payments", "depth": 14, "oldest_age_seconds": 0.8}]},
    response_only=True,
)
workers = OpenApiExample(
    "One worker",
    value={
        "results": [
            {
                "hostname": "payments@host-1",
                "service": "payments",
                "queues": ["payments"],
                "pid": 5120,
                "pool": "prefork",
                "concurrency": 2,
                "active": 1,
                "reserved": 0,
                "processed": 52310,
                "sw_version": "celery 5.7.0; atrium 0.1.0",
                "started_at": "2026-12-04T08:00:00.000000Z",
                "last_heartbeat": _AT,
                "status": "online",
                "stopped_at": None,
                "in_flight": [TASK_ID],
            }
        ]
    },
    response_only=True,
)
schedule = OpenApiExample(
    "The schedule",
    value={
        "results": [
            {
                "name": "payments.sweep",
                "task": "payments.sweep",
                "schedule": "every 15 seconds",
                "queue": "payments",
                "enabled": True,
                "housekeeping": True,
                "last_run": {
                    "task_id": TASK_ID,
                    "state": "succeeded",
                    "seen_at": _AT,
                    "finished_at": "2026-12-04T09:31:00.080000Z",
                    "runtime_ms": 61.0,
                    "exception_type": "",
                },
                "next_run": "2026-12-04T09:31:15.000000Z",
                "last_sent_at": _AT,
                "total_run_count": 2210,
            }
        ]
    },
    response_only=True,
)
periodic_run = OpenApiExample(
    "Sent now",
    value={"task_id": TASK_ID, "periodic": "payments.sweep"},
    response_only=True,
    status_codes=["202"],
)
periodic_paused = OpenApiExample("Paused", value={"name": "payments.sweep", "enabled": False}, response_only=True)
periodic_resumed = OpenApiExample("Resumed", value={"name": "payments.sweep", "enabled": True}, response_only=True)
