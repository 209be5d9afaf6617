"""Examples in the portal's catalog API reference (values as real answers have them)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

_AT = "2026-12-04T09:31:00.000000Z"
INSTANCE = {
    "instance": "payments-web@host-1:4242",
    "host": "host-1",
    "pid": 4242,
    "version": "0.1.0",
    "started_at": "2026-12-04T08:00:00.000000Z",
    "first_heartbeat": "2026-12-04T08:00:01.000000Z",
    "last_heartbeat": _AT,
    "heartbeats": 5580,
    "status": "passing",
}
SERVICE = {
    "slug": "payments",
    "display_name": "Payments",
    "description": "Payment orders: screening, holds and settlement in the ledger.",
    "team": "payments-team",
    "tier": 1,
    "lifecycle": "production",
    "repository_url": "https://git.example.com/atrium/atrium",
    "docs_url": "https://docs.example.com/atrium/payments",
    "base_url": "http://127.0.0.1:8002",
    "health_url": "http://127.0.0.1:8002/health/ready",
    "openapi_url": "http://127.0.0.1:8002/api/schema",
    "version": "0.1.0",
    "queues": ["payments"],
    "tags": ["money"],
    "health_interval_seconds": 30,
    "status": "passing",
    "health_status": "passing",
    "last_checked_at": _AT,
    "part_of": "",
    "role": "web",
    "uptime": {"24h": 100.0, "7d": 99.98, "30d": None},
    "uptime_observed_seconds": {"24h": 86100.0, "7d": 3600.0, "30d": 0.0},
    "registered_by": "cli_01m91tj5evb16g3wrkrk6xt9rh",
    "dependencies": [
        {"service": "ledger", "resource": "", "registered": True},
        {"service": "", "resource": "postgres", "registered": False},
    ],
    "instances": [INSTANCE],
    "created_at": "2026-12-01T08:00:00.000000Z",
    "updated_at": _AT,
}

service = OpenApiExample("The payments service", value=SERVICE, response_only=True, status_codes=["200", "201"])
manifest = OpenApiExample(
    "A service's manifest",
    value={
        "display_name": "Payments",
        "description": "Payment orders: screening, holds and settlement in the ledger.",
        "team": {"slug": "payments-team", "name": "Payments", "contact": "#payments", "on_call": "alice"},
        "tier": 1,
        "lifecycle": "production",
        "base_url": "http://127.0.0.1:8002",
        "health_url": "http://127.0.0.1:8002/health/ready",
        "openapi_url": "http://127.0.0.1:8002/api/schema",
        "version": "0.1.0",
        "queues": ["payments"],
        "dependencies": [{"service": "ledger"}, {"resource": "postgres"}],
    },
    request_only=True,
)
instance = OpenApiExample("An instance", value=INSTANCE, response_only=True)
health_check = OpenApiExample(
    "A passing check",
    value={"checked_at": _AT, "status": "passing", "http_status": 200, "latency_ms": 12, "error": None},
    response_only=True,
)
health_hours = OpenApiExample(
    "Two hours of checks",
    value={
        "service": "payments",
        "since": "2026-12-04T08:00:00Z",
        "until": "2026-12-04T10:00:00Z",
        "hours": [
            {
                "hour": "2026-12-04T08:00:00Z",
                "checks": 120,
                "passing": 120,
                "warning": 0,
                "critical": 0,
                "latency_ms_mean": 11.8,
            },
            {
                "hour": "2026-12-04T09:00:00Z",
                "checks": 62,
                "passing": 61,
                "warning": 0,
                "critical": 1,
                "latency_ms_mean": 14.2,
            },
        ],
    },
    response_only=True,
)
team = OpenApiExample(
    "A team",
    value={
        "slug": "payments-team",
        "name": "Payments",
        "contact": "#payments",
        "on_call": "alice",
        "services": [{"slug": "payments", "status": "passing"}],
        "created_at": "2026-12-01T08:00:00.000000Z",
        "updated_at": _AT,
    },
    response_only=True,
)
heartbeat = OpenApiExample(
    "An instance's heartbeat",
    value={"host": "host-1", "pid": 4242, "version": "0.1.0", "started_at": "2026-12-04T08:00:00Z"},
    request_only=True,
)
heartbeat_answer = OpenApiExample(
    "Recorded; beat again in 10 s",
    value={"instance": INSTANCE, "heartbeat_interval_seconds": 10},
    response_only=True,
    status_codes=["200", "201"],
)
calls = OpenApiExample(
    "Calls received since the last report, by calling client",
    value={"callers": {"cli_01m91tj5evb16g3wrkrk6xt9rh": 1200, "cli_01m91tj5ew2c6x0yq7k3p8d4rb": 35}},
    request_only=True,
)
calls_recorded = OpenApiExample("Two callers recorded", value={"callers": 2}, response_only=True)
graph = OpenApiExample(
    "Payments calls the ledger",
    value={
        "nodes": [
            {"id": "payments", "kind": "service", "status": "passing"},
            {"id": "ledger", "kind": "service", "status": "passing"},
        ],
        "edges": [
            {
                "from": "payments",
                "to": "ledger",
                "kind": "service",
                "declared": True,
                "observed": True,
                "calls": 1200,
                "last_seen": _AT,
                "drift": None,
            }
        ],
    },
    response_only=True,
)

_WINDOW = {"percent": 99.9, "observed_seconds": 86100.0, "window_seconds": 86400.0, "coverage": 99.65}
SERVICE_GROUP = {
    "slug": "ledger",
    "display_name": "Ledger",
    "description": "Double-entry accounts and balanced transactions.",
    "team": "ledger-team",
    "tier": 1,
    "lifecycle": "production",
    "status": "degraded",
    "reason": "down: worker-ledger",
    "base_url": "http://127.0.0.1:8001",
    "queues": ["ledger"],
    "processes": [
        {
            "slug": "ledger",
            "role": "web",
            "display_name": "Ledger",
            "version": "0.1.0",
            "queues": [],
            "status": "passing",
            "instances": 1,
            "instances_heartbeating": 1,
        },
        {
            "slug": "worker-ledger",
            "role": "worker",
            "display_name": "Ledger worker",
            "version": "0.1.0",
            "queues": ["ledger"],
            "status": "critical",
            "instances": 1,
            "instances_heartbeating": 0,
        },
    ],
    "uptime": {
        "24h": _WINDOW,
        "7d": _WINDOW | {"observed_seconds": 3600.0, "window_seconds": 604800.0, "coverage": 0.6},
        "30d": {"percent": None, "observed_seconds": 0.0, "window_seconds": 2592000.0, "coverage": 0.0},
    },
}
service_group = OpenApiExample("The ledger, a worker down", value=SERVICE_GROUP, response_only=True)
service_graph = OpenApiExample(
    "Payments calls the ledger",
    value={
        "nodes": [
            {"id": "payments", "kind": "service", "status": "passing", "resources": ["postgres", "redis"]},
            {"id": "ledger", "kind": "service", "status": "degraded", "resources": ["postgres", "redis"]},
        ],
        "edges": [
            {
                "from": "payments",
                "to": "ledger",
                "kind": "service",
                "declared": True,
                "observed": True,
                "calls": 1200,
                "last_seen": _AT,
                "drift": None,
            }
        ],
    },
    response_only=True,
)
