"""OpenTelemetry costs nothing when it is not asked for: with neither ``OTEL_EXPORTER_OTLP_ENDPOINT`` nor
``ATRIUM_OTEL_FILE`` set, Atrium imports no OpenTelemetry module, sets no tracer provider, instruments nothing, and
a call through the kit's client sends no ``traceparent``; with the file exporter set, the same process traces and
sends one (each in a fresh process).

One library imports part of OpenTelemetry on its own: redis-py (8.x) tries ``opentelemetry.sdk.metrics`` when it is
imported, for its own metrics, which stay off unless an application initialises them. What a process imports is
therefore compared with what ``import redis`` alone imports: Atrium adds nothing to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devtools.infra import REPO_ROOT, venv_env
from services.kit.telemetry import span_context_of, telemetry_wanted

# Django set up as a web process is, a request through its middleware, then a call to a local server through the
# kit's client (under a request id): which OpenTelemetry modules got imported, and which headers the server saw.
PROCESS = """
import json, sys, threading
import django
django.setup()
from http.server import BaseHTTPRequestHandler, HTTPServer
from django.test import Client

seen = {}

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        seen.update({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
from services.kit.context import request_id_var
from services.kit.http import ServiceClient

status = Client().get("/health/live").status_code
request_id_var.set("req-nil-cost")
ServiceClient(base_url=f"http://127.0.0.1:{server.server_port}", retries=0).get("/anything")
modules = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
trace = sys.modules.get("opentelemetry.trace")
provider = type(getattr(trace, "_TRACER_PROVIDER", None)).__name__
print("RESULT " + json.dumps({"status": status, "modules": modules, "provider": provider, "headers": seen}))
"""
# What redis-py imports of OpenTelemetry by itself.
REDIS_ALONE = """
import json, sys
import redis
print("RESULT " + json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")}))
"""


def run_process(code: str = PROCESS, **extra: str) -> dict:
    env = venv_env(dict(os.environ))
    for name in list(env):
        if name.startswith("OTEL_") or name == "ATRIUM_OTEL_FILE":
            env.pop(name)
    env.update(extra)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise AssertionError(f"the process failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def test_with_no_endpoint_nothing_is_imported_instrumented_or_sent():
    result = run_process()

    assert result["status"] == 200
    assert result["modules"] == run_process(REDIS_ALONE)["modules"]
    assert not [
        m for m in result["modules"] if m.startswith(("opentelemetry.instrumentation", "opentelemetry.sdk.trace"))
    ]
    assert result["provider"] == "NoneType"  # no tracer provider was ever set
    assert result["headers"]["x-request-id"] == "req-nil-cost"
    assert "traceparent" not in result["headers"]


def test_an_sdk_switched_off_by_its_own_variable_stays_off(tmp_path: Path):
    result = run_process(ATRIUM_OTEL_FILE=str(tmp_path / "spans.jsonl"), OTEL_SDK_DISABLED="true")

    assert result["modules"] == run_process(REDIS_ALONE)["modules"]
    assert "traceparent" not in result["headers"]
    assert not (tmp_path / "spans.jsonl").exists()


def test_with_the_file_exporter_the_same_process_traces_and_propagates(tmp_path: Path):
    path = tmp_path / "spans.jsonl"

    result = run_process(ATRIUM_OTEL_FILE=str(path))

    context = span_context_of(result["headers"]["traceparent"])
    assert context is not None
    spans = [json.loads(line) for line in path.read_text().splitlines()]  # flushed at exit
    (call,) = [
        s for s in spans if s["kind"] == "SpanKind.CLIENT" and "/anything" in s["attributes"].get("http.url", "")
    ]
    assert call["context"]["span_id"] == f"0x{context.span_id:016x}"
    assert call["attributes"]["atrium.request_id"] == "req-nil-cost"
    assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"ledger"}


def test_the_environment_decides():
    assert not telemetry_wanted({})
    assert telemetry_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert telemetry_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert telemetry_wanted({"ATRIUM_OTEL_FILE": "/tmp/spans.jsonl"})
    assert not telemetry_wanted({"ATRIUM_OTEL_FILE": "/tmp/spans.jsonl", "OTEL_SDK_DISABLED": "TRUE"})


def test_a_traceparent_is_read_strictly():
    context = span_context_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert (context.trace_id, context.span_id, context.is_remote) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        True,
    )
    for bad in (
        "",
        "garbage",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ):
        assert span_context_of(bad) is None
