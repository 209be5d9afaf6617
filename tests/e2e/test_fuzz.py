"""Property-based fuzzing of every service's OpenAPI schema (Schemathesis), against live processes.

Each service runs under gunicorn; Schemathesis generates requests from the service's own schema — valid ones,
and invalid ones (wrong types, missing fields, odd strings) — with a fixed seed and a bounded number of cases
per operation, and checks every answer: never a 5xx, and the status, content type and body as the schema
documents them. It calls with a machine client of its own, allowed every audience and scope but client
management, so it cannot reach the demo client's (or its own) destructive operations; health URLs it registers
are allow-listed to loopback. The figures of each run (operations, requests, failures) are written to the
test's log directory and asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from portal.identity import services as identity
from portal.jobs.models import Job, JobState
from tests.harness import AtriumProcess, ProcessHarness, current_test_database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SEED = 20261204
# Cases per operation: enough to reach every documented status of most operations, bounded for CI.
MAX_EXAMPLES = int(os.environ.get("ATRIUM_FUZZ_EXAMPLES", "25"))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _config(path: Path, fixed: dict[str, dict[str, str]]) -> Path:
    """A schemathesis.toml giving path parameters the ids of resources that exist (``fixed``: a path regex →
    ``{"path.<name>": value}``), so those operations reach their logic instead of only answering 404."""
    lines = []
    for regex, parameters in fixed.items():
        values = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in parameters.items())
        lines += ["[[operations]]", f"include-path-regex = {json.dumps(regex)}", f"parameters = {{ {values} }}", ""]
    path.write_text("\n".join(lines))
    return path


def fuzz(service: str, url: str, token: str, out: Path, fixed: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Run Schemathesis against ``url``'s schema; return its figures (and the failures it reported)."""
    report = out / f"fuzz-{service}.json"
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(_config(out / f"fuzz-{service}.toml", fixed)),
        "run",
        f"{url}/api/schema",
        "--url",
        url,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One worker: hypothesis describes lambdas with ast.parse, which CPython 3.11 cannot run in two threads at
        # once ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--max-redirects",
        "0",
        "--suppress-health-check",
        "all",
        "--continue-on-failure",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--output-truncate",
        "true",
    ]
    done = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=900)
    (out / f"fuzz-{service}.log").write_text(done.stdout + done.stderr)
    return {"returncode": done.returncode, "output": done.stdout[-20000:], "report": _read(report)}


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _seed(
    portal: AtriumProcess,
    ledger: AtriumProcess,
    payments: AtriumProcess,
    webhooks: AtriumProcess,
    tokens: dict[str, str],
) -> dict[str, dict[str, dict[str, str]]]:
    """Resources for the fuzzer to work on, and the path parameters that name them, per service."""

    def call(process: AtriumProcess, audience: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = httpx.request(
            method,
            f"{process.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {tokens[audience]}"},
            timeout=30,
        )
        assert response.status_code < 300, (path, response.text)
        return response.json()

    service = call(
        portal,
        "portal",
        "PUT",
        "/api/v1/catalog/services/fuzzed",
        {
            "display_name": "Fuzzed",
            "team": {"slug": "fuzzers", "name": "Fuzzers"},
            "base_url": ledger.url,
            "health_url": f"{ledger.url}/health/ready",
            "openapi_url": f"{ledger.url}/api/schema",
            "version": "1.0.0",
        },
    )
    instance = call(
        portal,
        "portal",
        "POST",
        f"/api/v1/catalog/services/{service['slug']}/instances/fuzz-1/heartbeat",
        {"version": "1.0.0"},
    )
    job = Job.objects.create(
        task_id=str(uuid.uuid4()),
        name="portal.probe",
        queue="portal",
        service="portal",
        state=JobState.FAILED,
        payload={"args": [], "kwargs": {"outcome": "succeed"}},
        exception_type="ProbeFailed",
        seen_at=timezone.now(),
        last_event_at=timezone.now(),
    )
    world = call(
        ledger,
        "ledger",
        "POST",
        "/api/v1/accounts",
        {"name": "world", "currency": "EUR", "normal_balance": "credit", "allow_negative": True},
    )
    shop = call(
        ledger, "ledger", "POST", "/api/v1/accounts", {"name": "shop", "currency": "EUR", "normal_balance": "credit"}
    )
    postings = [
        {"account": world["id"], "direction": "debit", "amount": 500},
        {"account": shop["id"], "direction": "credit", "amount": 500},
    ]
    hold = call(
        ledger,
        "ledger",
        "POST",
        "/api/v1/transactions",
        {"reference": "fuzz-hold", "pending": True, "postings": postings},
    )
    payment = call(
        payments,
        "payments",
        "POST",
        "/api/v1/payments",
        {"amount": 100, "currency": "EUR", "source_account": world["id"], "destination_account": shop["id"]},
    )
    endpoint = call(
        webhooks,
        "webhooks",
        "POST",
        "/api/v1/endpoints",
        {"url": "http://127.0.0.1:9/fuzzed", "event_types": ["payment.*"], "v1a": True},
    )
    example = call(webhooks, "webhooks", "GET", "/api/v1/event-types/payment.created")["example"]
    message = call(webhooks, "webhooks", "POST", "/api/v1/messages", {"type": "payment.created", "data": example})
    recovery = call(
        webhooks, "webhooks", "POST", f"/api/v1/endpoints/{endpoint['id']}/recover", {"since": "2026-01-01T00:00:00Z"}
    )
    return {
        "portal": {
            r"^/api/v1/catalog/services/\{slug\}/instances/\{instance\}": {
                "path.slug": service["slug"],
                "path.instance": instance["instance"]["instance"],
            },
            r"^/api/v1/catalog/services/\{slug\}($|/(health|calls|instances)$|/health/hours$)": {
                "path.slug": service["slug"]
            },
            r"^/api/v1/catalog/teams/\{slug\}": {"path.slug": "fuzzers"},
            r"^/api/v1/jobs/tasks/\{task_id\}": {"path.task_id": job.task_id},
            r"^/api/v1/trace/\{trace_id\}$": {"path.trace_id": job.task_id},
        },
        "ledger": {
            r"^/api/v1/accounts/\{id\}": {"path.id": shop["id"]},
            r"^/api/v1/transactions/\{id\}": {"path.id": hold["id"]},
        },
        "payments": {r"^/api/v1/payments/\{id\}": {"path.id": payment["id"]}},
        "webhooks": {
            r"^/api/v1/endpoints/\{id\}": {"path.id": endpoint["id"]},
            r"^/api/v1/messages/\{id\}": {"path.id": message["id"]},
            r"^/api/v1/event-types/\{name\}": {"path.name": "payment.settled"},
            r"^/api/v1/recoveries/\{id\}": {"path.id": recovery["id"]},
        },
    }


@pytest.mark.timeout(900)  # four services, each fuzzed for a minute or two
def test_every_service_answers_a_seeded_fuzz_without_a_5xx_and_as_its_schema_says(
    harness: ProcessHarness, live_portal: AtriumProcess, get_token: Callable[..., str]
):
    # given every service live, and a fuzzing client of its own (every audience and scope but client management)
    audiences = list(settings.ATRIUM_AUDIENCE_SCOPES)
    scopes = sorted({s for v in settings.ATRIUM_AUDIENCE_SCOPES.values() for s in v} - {"identity:manage"})
    client, secret = identity.client_create(name=f"fuzzer-{uuid.uuid4().hex[:6]}", audiences=audiences, scopes=scopes)
    service_client, service_secret = identity.client_create(
        name=f"payments-service-{uuid.uuid4().hex[:6]}",
        audiences=["ledger"],
        scopes=["ledger:read", "ledger:write"],
    )
    common = {"JWT_JWKS_URL": f"{live_portal.url}/.well-known/jwks.json", "ATRIUM_OUTBOX_RELAY": "off"}
    ledger = harness.web("ledger", env=common)
    payments = harness.web(
        "payments",
        env={
            **common,
            "LEDGER_URL": ledger.url or "",
            "ATRIUM_TOKEN_URL": f"{live_portal.url}/api/v1/auth/token",
            "PAYMENTS_CLIENT_ID": service_client.id,
            "PAYMENTS_CLIENT_SECRET": service_secret,
        },
    )
    # (endpoint URLs on loopback are allow-listed, as make up does for its demo receiver; nothing is delivered)
    webhooks = harness.web("webhooks", env={**common, "WEBHOOKS_ALLOWED_NETWORKS": "127.0.0.1/32"})
    # (the portal's diagnostics ping waits for a portal worker: one runs, so a ping is answered, not a 504)
    harness.worker("portal", database_url=current_test_database_url())
    targets = {"portal": live_portal, "ledger": ledger, "payments": payments, "webhooks": webhooks}

    tokens = {name: get_token(client.id, secret, name) for name in targets}
    fixed = _seed(live_portal, ledger, payments, webhooks, tokens)

    # when Schemathesis fuzzes each one's schema
    results = {
        name: fuzz(name, process.url or "", tokens[name], harness.log_dir, fixed[name])
        for name, process in targets.items()
    }

    # then nothing failed: no 5xx, no answer the schema does not describe
    figures = {}
    for name, result in results.items():
        report = result["report"]
        assert report, f"{name}: Schemathesis wrote no report:\n{result['output']}"
        figures[name] = report
        assert result["returncode"] == 0, f"{name}:\n{result['output']}"
    (harness.log_dir / "fuzz-figures.json").write_text(json.dumps(figures, indent=2, default=str))
