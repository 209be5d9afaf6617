"""Payments throughput: payments driven at increasing rates through the whole system, created → settled.

Run from the repository root::

    .venv/bin/python -m bench.payments [--rates 50,100,150,200,250] [--seconds 15] [--workers 2]

PostgreSQL and Redis are external when ``DATABASE_URL``/``REDIS_URL`` are set, otherwise embedded. Fresh
databases for the ledger, payments and (with the audit path, the default) the portal are created, migrated
and dropped at the end. Every part runs as in production, each its own process: the ledger and payments
under gunicorn (``ATRIUM_ENV=production``), ``--workers`` payments Celery worker processes (prefork,
``--concurrency`` each), each service's outbox relay process, an ``audit`` worker chaining every
audit event into the portal's database, and the job monitor recording every task's life cycle there too
(``--no-audit`` leaves both out). Tokens are EdDSA JWTs from
a key this process publishes (JWKS) and mints for the services' token requests, so the portal's web
process is not needed.

For each offered rate, client threads create payments open-loop (``POST /api/v1/payments``, keep-alive
``http.client``, evenly spaced) for ``--seconds``; the run then waits up to ``--drain`` seconds for them
to settle. Latency is create → settled from the payment's own ``status_history`` (both stamps taken by
the services, on this machine's clock). Reported per rate: payments created, the rate achieved, settled
per second over the step (from the first creation to the last settlement), latency p50/p99, what was not
settled within the drain time, how many audit events were still on their way to the portal's trail when the
payments had settled and how many seconds later the trail held them all. The sustained rate is the highest
step whose payments all settled within the drain time at ≥ 95 % of the offered rate and whose audit events
were all chained within the drain time after that. At the end, the CPU each part of the system used per
settled payment (from /proc: each process with its children, PostgreSQL's and Redis's server processes).

``--otel`` runs every process with OpenTelemetry on, exporting to a file (``ATRIUM_OTEL_FILE``, under
``var/bench-payments/``; spans of every instrumentation, all sampled), to measure what tracing costs:
``python -m bench.payments --rates 200 --otel`` against the same command without it (docs/observability.md).

``--webhooks`` adds the webhooks service (its database, web process, a worker, the dispatcher) and one endpoint
subscribed to ``payment.*`` on a local receiver (``tests/webhook_receivers.py``, its own process, verifying one
delivery in ten): every payment's events are delivered. Each step then also reports how many of its payments'
events had not arrived when the payments had settled, how many seconds later all had, and their p99 from the
event's time to its arrival; a step counts as sustained only if all arrived within the drain time
(issue #19: ≥ 250 settled/s with webhooks on).

``--risk`` screens every payment with the TypeScript risk service (services/risk on Node 24, its own database,
``PAYMENTS_RISK_FALLBACK=hold``): payments' workers call it once per batch during screening, and its audit events
reach the portal's trail over HTTP (``POST /api/v1/audit/events:ingest``), so a portal web process runs too (the
risk service registers in its catalog and relays to it). Each step's audit catch-up then counts the risk
service's events as well, and the CPU table has the risk service's own row: its CPU per payment
(issue #21: ≥ 250 settled/s sustained and p99 < 2 s at 100/s with risk screening on).

Targets on the 2-core machine: ≥ 200 settled payments/s sustained, p99 create → settled < 2 s at 100/s.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.server
import json
import os
import platform
import random
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.ledger import Jwks, LeanClient, machine_ticks, percentile
from devtools.infra import (
    REPO_ROOT,
    Infra,
    database_create,
    database_drop,
    database_url_with_name,
    free_port,
    infra_start,
    venv_env,
)
from devtools.loadkit import broker_purge, cpu_by_session, cpu_delta, ledger_accounts
from devtools.processes import process_group_stop
from portal.identity.keys import public_jwk

TARGET_SUSTAINED = 200.0
TARGET_P99_AT_100 = 2.0
TARGET_SUSTAINED_RISK = 250.0  # issue #21: with risk screening on
LOG_DIR = REPO_ROOT / "var" / "bench-payments"
SERVICE_CLIENT = "cli_payments_bench"
# What the bench's token endpoint grants per audience (beyond <audience>:read/write): the risk service's
# assessments to payments, and the portal's catalog and audit ingest to the risk service.
SCOPES = {
    "risk": "risk:read risk:assess risk:write",
    "portal": "portal:read catalog:register audit:ingest",
}


class Tokens(Jwks):
    """The bench key's JWKS, plus a token endpoint minting tokens for the payments service's ledger calls."""

    def __init__(self) -> None:
        super().__init__()
        # The portal's own kid for this key (RFC 7638 thumbprint): with --risk the portal's web process verifies
        # the tokens the risk service presents with this same key, under its own kid.
        self.kid = public_jwk(self.key.public_key())["kid"]
        key, kid = self.key, self.kid
        jwks_path = urllib.parse.urlsplit(self.url).path
        document = json.dumps({"keys": [self.jwk()]}).encode()
        # The revocation list the portal serves next to its key set, which every service reads: empty.
        revocations_path = jwks_path.rsplit("/", 1)[0] + "/atrium-revocations.json"
        revocations = json.dumps({"generated_at": time.time(), "clients": {}}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == jwks_path:
                    self._reply(200, document)
                elif self.path == revocations_path:
                    self._reply(200, revocations)
                else:
                    self._reply(404, b"{}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                audience = form.get("audience", "")
                now = int(time.time())
                claims = {
                    "iss": "atrium-portal",
                    "aud": audience,
                    "sub": form.get("client_id", ""),
                    "iat": now,
                    "exp": now + 3600,
                    "scope": SCOPES.get(audience, f"{audience}:read {audience}:write"),
                }
                token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
                self._reply(200, json.dumps({"access_token": token, "expires_in": 3600}).encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server.shutdown()
        self.server.server_close()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}{jwks_path}"
        self.token_url = f"http://127.0.0.1:{port}/api/v1/auth/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def jwk(self) -> dict[str, Any]:
        from jwt.algorithms import OKPAlgorithm

        return {**OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True), "kid": self.kid, "alg": "EdDSA"}

    def token(self, audience: str, subject: str = "cli_bench") -> str:
        now = int(time.time())
        claims = {
            "iss": "atrium-portal",
            "aud": audience,
            "sub": subject,
            "iat": now,
            "exp": now + 7200,
            "scope": f"{audience}:read {audience}:write",
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})


def _clean_env() -> dict[str, str]:
    env = venv_env(dict(os.environ))
    for name in (
        "DATABASE_URL",
        "PORTAL_DATABASE_URL",
        "LEDGER_DATABASE_URL",
        "PAYMENTS_DATABASE_URL",
        "WEBHOOKS_DATABASE_URL",
        "DEBUG",
    ):
        env.pop(name, None)
    return env


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class System:
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], **extra: str) -> Process:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603  (fixed arguments)
                cmd,
                env={**self.env, **extra},
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, proc, log)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process_group_stop(process.proc, 20)


def manage(settings: str, env: dict[str, str], *args: str) -> None:
    script = {
        "services.ledger.settings": "services/ledger/manage.py",
        "services.payments.settings": "services/payments/manage.py",
        "services.webhooks.settings": "services/webhooks/manage.py",
    }
    done = subprocess.run(  # noqa: S603  (fixed arguments)
        [sys.executable, script.get(settings, "manage.py"), *args],
        env={**env, "DJANGO_SETTINGS_MODULE": settings, "ATRIUM_ENV": "test"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{settings} {args} failed:\n{done.stdout}\n{done.stderr}")


def worker_cmd(celery: str, queue: str, concurrency: int, node: str) -> list[str]:
    options = ["--without-gossip", "--without-mingle", "-l", "WARNING"]
    return [celery, "-A", "workers", "worker", "-Q", queue, "-c", str(concurrency), "-n", node, *options]


def wait_ready(url: str, process: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{process.name} not ready:\n{process.tail()}")


@dataclass
class Step:
    rate: float
    created: int = 0
    failed_creates: int = 0
    seconds: float = 0.0
    ids: list[str] = field(default_factory=list)


def drive(base: str, token: str, rate: float, seconds: float, sources: list[str], destinations: list[str]) -> Step:
    """Create payments open-loop at ``rate`` per second for ``seconds`` (threads sharing evenly spaced slots)."""
    step = Step(rate)
    total = int(rate * seconds)
    # Enough threads that a slow answer does not hold the offered rate back (open loop): at 50 ms per request
    # under load, 200/s needs 10 threads busy at once.
    threads_n = max(4, min(64, int(rate // 8) + 4))
    began = time.monotonic()
    lock = threading.Lock()
    counter = iter(range(total))

    def run() -> None:
        client = LeanClient(base, token)
        rng = random.Random()  # noqa: S311
        try:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                due = began + n / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                source = rng.choice(sources)
                body = {
                    "amount": rng.randint(1, 10_000),
                    "currency": "EUR",
                    "source_account": source,
                    "destination_account": rng.choice(destinations),
                }
                reply = client.post("payments", body)
                with lock:
                    if reply.status_code == 201:
                        step.created += 1
                        step.ids.append(reply.json()["id"])
                    else:
                        step.failed_creates += 1
        finally:
            client.close()

    threads = [threading.Thread(target=run) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    step.seconds = time.monotonic() - began
    return step


def settle_times(payments_url: str, ids: list[str], drain: float) -> tuple[dict[str, float], int]:
    """Wait until the payments are final (or ``drain`` runs out); return create→settled seconds by id and
    how many ended otherwise (rejected, failed, canceled)."""
    deadline = time.monotonic() + drain
    with psycopg.connect(payments_url, autocommit=True) as conn:
        while True:
            open_count = conn.execute(
                "SELECT count(*) FROM payments_payment WHERE id = ANY(%s) AND status IN "
                "('created','screening','processing')",
                [ids],
            ).fetchone()[0]
            if not open_count or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        rows = conn.execute(
            "SELECT id, status, created_at, status_history FROM payments_payment WHERE id = ANY(%s)", [ids]
        ).fetchall()
    latencies: dict[str, float] = {}
    other = 0
    for payment_id, status, created_at, history in rows:
        if status == "settled":
            settled = dt.datetime.fromisoformat(history[-1]["at"].replace("Z", "+00:00"))
            latencies[payment_id] = (settled - created_at).total_seconds()
        elif status not in ("created", "screening", "processing"):
            other += 1
    return latencies, other


def cpu_by_part(system: System) -> dict[int, tuple[str, float]]:
    """pid → (part, CPU seconds used so far) of every process of each part of the system (each part is its own
    session: the process and its children), of PostgreSQL and Redis (their server processes, whoever started
    them), and of this bench."""
    sessions = {
        process.proc.pid: process.name.rsplit("-", 1)[0] if process.name[-1].isdigit() else process.name
        for process in system.processes
    }
    return cpu_by_session(sessions, own="bench client")


def audit_lag(url: dict[str, str]) -> int:
    """Audit events written to the ledger's and the payments' outboxes and not (yet) in the portal's trail."""
    written = 0
    for service in ("ledger", "payments"):
        with psycopg.connect(url[service], autocommit=True) as conn:
            written += conn.execute("SELECT count(*) FROM kit_outbox_event WHERE topic = 'audit'").fetchone()[0]
    if "risk" in url:  # the risk service's own outbox (it keeps every event: the relay moves a watermark)
        with psycopg.connect(url["risk"], autocommit=True) as conn:
            written += conn.execute("SELECT last_seq FROM risk_outbox_state").fetchone()[0]
    with psycopg.connect(url["portal"], autocommit=True) as conn:
        chained = conn.execute("SELECT count(*) FROM audit_event").fetchone()[0]
    return written - chained


def audit_wait(url: dict[str, str], base: int, limit: float) -> tuple[int, float]:
    """How many audit events were still on their way when the step's payments had settled, and how many
    seconds later the trail held them all (-1: not within ``limit``)."""
    began = time.monotonic()
    behind = audit_lag(url) - base
    lag = behind
    while lag > 0:
        if time.monotonic() - began > limit:
            return behind, -1.0
        time.sleep(0.2)
        lag = audit_lag(url) - base
    return behind, time.monotonic() - began if behind > 0 else 0.0


PUBLIC_PAYMENT_EVENTS = ("created", "settled", "failed", "rejected", "canceled")


def webhooks_start(system: System, run_id: str, tokens: Tokens) -> Any:
    """The webhooks service's processes (web, one worker, the dispatcher), a receiver in its own process and one
    endpoint on it subscribed to ``payment.*``; return the receivers (``tests.webhook_receivers.Receivers``)."""
    from tests.webhook_receivers import Receivers, secret_new

    bindir = Path(sys.executable).parent
    port = free_port()
    web = system.start(
        "webhooks-web",
        [str(bindir / "gunicorn"), "services.webhooks.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        DJANGO_SETTINGS_MODULE="services.webhooks.settings",
    )
    wait_ready(f"http://127.0.0.1:{port}", web)
    system.start(
        "webhooks-worker",
        worker_cmd(str(bindir / "celery"), "webhooks", 1, f"bench-webhooks-{run_id}@%h"),
        DJANGO_SETTINGS_MODULE="services.webhooks.settings",
    )
    system.start(
        "webhooks-dispatcher",
        [sys.executable, "services/webhooks/manage.py", "webhooks_dispatch"],
        DJANGO_SETTINGS_MODULE="services.webhooks.settings",
    )
    receivers = Receivers(process=True)
    secret = secret_new()
    target = receivers.add("sink", secret=secret, verify_every=10)
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/endpoints",
        json={"url": target, "event_types": ["payment.*"], "secret": secret, "description": "bench.payments sink"},
        headers={"Authorization": f"Bearer {tokens.token('webhooks')}"},
        timeout=30,
    )
    if response.status_code != 201:
        receivers.close()
        raise RuntimeError(f"webhooks endpoint: {response.status_code} {response.text}")
    return receivers


def webhooks_wait(receivers: Any, payments_url: str, ids: list[str], limit: float) -> tuple[int, float, float]:
    """How many of the payments' public events (one per public status in their history) had not reached the
    receiver when the payments had settled, how many seconds later all had (-1: not within ``limit``), and the
    p99 seconds from each event's time to its first arrival."""
    with psycopg.connect(payments_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, status_history FROM payments_payment WHERE id = ANY(%s)", [ids]).fetchall()
    expected = {(f"payment.{h['status']}", pid) for pid, history in rows for h in history}
    expected = {(kind, pid) for kind, pid in expected if kind.removeprefix("payment.") in PUBLIC_PAYMENT_EVENTS}
    began = time.monotonic()
    behind: int | None = None
    while True:
        first: dict[tuple[str, str | None], Any] = {}
        for delivery in receivers.successes("sink"):
            first.setdefault((delivery.type, delivery.object_id), delivery)
        missing = len(expected - first.keys())
        behind = missing if behind is None else behind
        lags = [first[k].lag for k in expected if k in first and first[k].lag is not None]
        p99 = percentile(lags, 0.99)
        if not missing:
            return behind, (time.monotonic() - began if behind else 0.0), p99
        if time.monotonic() - began > limit:
            return behind, -1.0, p99
        time.sleep(0.25)


def risk_start(system: System, url: dict[str, str], gunicorn: str) -> None:
    """The portal's web process (the risk service registers in its catalog and relays its audit events to it) and
    the risk service on Node 24, its database migrated; payments then screens with it (``RISK_URL``)."""
    from devtools.node import node_env, node_path, npm_ci

    risk_dir = REPO_ROOT / "services" / "risk"
    npm_ci(risk_dir)
    node = node_path()
    done = subprocess.run(  # noqa: S603  (fixed arguments)
        [node, "src/migrate.ts"],
        env=node_env({**system.env, "RISK_DATABASE_URL": url["risk"]}),
        cwd=risk_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"risk migrate failed:\n{done.stdout}\n{done.stderr}")
    # The risk service's machine client in the portal's database (the portal refuses tokens of clients it does not
    # know); the bench's token endpoint mints its tokens.
    made = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from portal.identity import services; "
            "client, _ = services.client_create(name='risk-bench', audiences=['portal'], "
            "scopes=['catalog:register', 'audit:ingest']); print('CLIENT', client.id)",
        ],
        env={**system.env, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    client_id = next((line.split()[1] for line in made.stdout.splitlines() if line.startswith("CLIENT ")), "")
    if not client_id:
        raise RuntimeError(f"risk's machine client:\n{made.stdout}\n{made.stderr}")
    portal_port, risk_port = free_port(), free_port()
    portal = system.start(
        "portal",
        [gunicorn, "portal.wsgi", "--bind", f"127.0.0.1:{portal_port}", "--workers", "1", "--threads", "4"],
        DJANGO_SETTINGS_MODULE="portal.settings",
        # it polls the risk service's health URL (registered in its catalog) on loopback
        ATRIUM_OUTBOUND_ALLOW_NETWORKS="127.0.0.1/32",
    )
    portal_url = f"http://127.0.0.1:{portal_port}"
    wait_ready(portal_url, portal)
    risk_url = f"http://127.0.0.1:{risk_port}"
    risk = system.start(
        "risk",
        [node, "services/risk/src/main.ts"],
        **node_env(
            {
                "RISK_DATABASE_URL": url["risk"],
                "RISK_PORT": str(risk_port),
                "RISK_URL": risk_url,
                "ATRIUM_PORTAL_URL": portal_url,
                "RISK_CLIENT_ID": client_id,
                "RISK_CLIENT_SECRET": "bench",
                "ATRIUM_LOG_FORMAT": "json",
                "PATH": system.env.get("PATH", ""),
            }
        ),
    )
    wait_ready(risk_url, risk)
    system.env.update(RISK_URL=risk_url, PAYMENTS_RISK_FALLBACK="hold")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.payments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="50,100,150,200,250", help="offered payments/s, in order")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per rate (default 15)")
    parser.add_argument("--drain", type=float, default=20.0, help="seconds to wait for a step to settle")
    parser.add_argument("--workers", type=int, default=2, help="payments Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="prefork children per worker (default 4)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers per service (default 2)")
    parser.add_argument("--no-audit", action="store_true", help="leave the audit worker out (events pile up)")
    parser.add_argument(
        "--keep-databases", action="store_true", help="leave the databases (and --otel's spans) for inspection"
    )
    parser.add_argument(
        "--webhooks", action="store_true", help="the webhooks service on: every payment's events delivered"
    )
    parser.add_argument(
        "--risk", action="store_true", help="risk screening on: the Node risk service (and a portal web process)"
    )
    parser.add_argument(
        "--otel", action="store_true", help="OpenTelemetry on in every process (a file exporter; see the docstring)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    run_id = uuid.uuid4().hex[:8]
    names = {
        k: f"atrium_bench_pay_{run_id}_{k}"
        for k in (
            "ledger",
            "payments",
            "portal",
            *(("webhooks",) if args.webhooks else ()),
            *(("risk",) if args.risk else ()),
        )
    }
    infra: Infra | None = None
    system: System | None = None
    tokens: Tokens | None = None
    receivers: Any = None
    created: list[str] = []
    failed = False
    try:
        print("starting infrastructure…", flush=True)
        infra = infra_start("bench")
        broker_purge(infra.redis_url)
        for name in names.values():
            database_create(infra.database_url, name)
            created.append(name)
        url = {k: database_url_with_name(infra.database_url, v) for k, v in names.items()}
        tokens = Tokens()
        env = _clean_env()
        env.update(
            ATRIUM_ENV="production",
            SECRET_KEY=secrets.token_urlsafe(48)[:64],
            ALLOWED_HOSTS="127.0.0.1",
            SECURE_SSL_REDIRECT="false",
            REDIS_URL=infra.redis_url,
            JWT_JWKS_URL=tokens.url,
            ATRIUM_TOKEN_URL=tokens.token_url,
            LEDGER_DATABASE_URL=url["ledger"],
            PAYMENTS_DATABASE_URL=url["payments"],
            PORTAL_DATABASE_URL=url["portal"],
            WEBHOOKS_DATABASE_URL=url.get("webhooks", ""),
            WEBHOOKS_ALLOWED_NETWORKS="127.0.0.1/32",
            PAYMENTS_CLIENT_ID=SERVICE_CLIENT,
            PAYMENTS_CLIENT_SECRET="bench",
            AUDIT_SIGNING_KEY_FILE="",
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="WARNING",
            # Every task is tracked (as in production) into this run's own stream, which the job monitor records.
            JOBS_STREAM=f"atrium:jobs:bench-payments-{run_id}",
            # The portal's processes (the monitor) pass production's checks: they have a signing key, the bench's.
            JWT_PRIVATE_KEY=tokens.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            # ...and an OIDC key (ID tokens, RS256): production's check identity.E002 refuses to start without one.
            OIDC_PRIVATE_KEY=rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            .decode(),
        )
        otel_file: Path | None = None
        if args.otel:
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            otel_file = LOG_DIR / f"spans-{run_id}.jsonl"
            env["ATRIUM_OTEL_FILE"] = str(otel_file)
            print(f"OpenTelemetry on: spans to {otel_file}", flush=True)
        print("migrating…", flush=True)
        if args.webhooks:
            from cryptography.fernet import Fernet

            env["WEBHOOKS_SECRET_KEYS"] = Fernet.generate_key().decode()
        for settings in (
            "services.ledger.settings",
            "services.payments.settings",
            "portal.settings",
            *(("services.webhooks.settings",) if args.webhooks else ()),
        ):
            manage(settings, env, "migrate", "--noinput", "-v", "0")
        system = System(env)
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        celery = str(Path(sys.executable).parent / "celery")
        if args.risk:
            risk_start(system, url, gunicorn)
        ledger_port, payments_port = free_port(), free_port()
        layout = ["--workers", str(args.web_workers), "--threads", "2"]
        ledger = system.start(
            "ledger",
            [gunicorn, "services.ledger.wsgi", "--bind", f"127.0.0.1:{ledger_port}", *layout],
            DJANGO_SETTINGS_MODULE="services.ledger.settings",
        )
        ledger_url = f"http://127.0.0.1:{ledger_port}"
        wait_ready(ledger_url, ledger)
        system.env["LEDGER_URL"] = ledger_url
        payments = system.start(
            "payments",
            [gunicorn, "services.payments.wsgi", "--bind", f"127.0.0.1:{payments_port}", *layout],
            DJANGO_SETTINGS_MODULE="services.payments.settings",
        )
        payments_url = f"http://127.0.0.1:{payments_port}"
        wait_ready(payments_url, payments)
        for n in range(args.workers):
            system.start(
                f"payments-worker-{n}",
                [
                    celery,
                    "-A",
                    "workers",
                    "worker",
                    "-Q",
                    "payments",
                    "-c",
                    str(args.concurrency),
                    "-n",
                    f"bench-payments-{run_id}-{n}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "WARNING",
                ],
                DJANGO_SETTINGS_MODULE="services.payments.settings",
            )
        for service, script in (("ledger", "services/ledger/manage.py"), ("payments", "services/payments/manage.py")):
            system.start(
                f"{service}-relay",
                [sys.executable, script, "outbox_relay"],
                DJANGO_SETTINGS_MODULE=f"services.{service}.settings",
            )
        if not args.no_audit:
            system.start(
                "audit-worker",
                [
                    celery,
                    "-A",
                    "workers",
                    "worker",
                    "-Q",
                    "audit",
                    "-c",
                    "1",
                    "-n",
                    f"bench-audit-{run_id}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "WARNING",
                ],
                DJANGO_SETTINGS_MODULE="portal.settings",
            )
        if not args.no_audit:  # the portal's database is there: the job monitor records every task into it
            system.start(
                "jobs-monitor",
                [sys.executable, "manage.py", "jobs_monitor", "--consumer", f"bench-{run_id}"],
                DJANGO_SETTINGS_MODULE="portal.settings",
            )
        if args.webhooks:
            receivers = webhooks_start(system, run_id, tokens)
        sources, destinations = ledger_accounts(ledger_url, tokens.token("ledger"))
        token = tokens.token("payments", "cli_bench_merchant")
        print("warming up…", flush=True)
        warm = drive(payments_url, token, 20, 3, sources, destinations)
        settle_times(url["payments"], warm.ids, 30)
        if not args.no_audit:
            audit_wait(url, 0, 30)  # the warm-up's audit events chained: the steps start from a clean slate

        print(
            f"{'offered/s':>9} {'created':>8} {'achieved/s':>10} {'settled/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'unsettled':>9} {'other':>5} {'machine busy':>12} {'audit behind':>12} {'audit +s':>8}"
            + (f" {'hooks behind':>12} {'hooks +s':>8} {'hook p99':>8}" if args.webhooks else ""),
            flush=True,
        )
        audit_base = 0 if args.no_audit else audit_lag(url)
        results = []
        cpu_rows: list[tuple[float, int, dict[str, float]]] = []
        for rate in rates:
            cpu0 = cpu_by_part(system)
            busy0, total0 = machine_ticks()
            began = time.time()
            step = drive(payments_url, token, rate, args.seconds, sources, destinations)
            latencies, other = settle_times(url["payments"], step.ids, args.drain)
            busy1, total1 = machine_ticks()
            values = sorted(latencies.values())
            unsettled = step.created - len(values) - other
            span = max(step.seconds, max(values, default=0.0) + 0.0)
            with psycopg.connect(url["payments"], autocommit=True) as conn:
                last = conn.execute(
                    "SELECT max((status_history->-1->>'at')::timestamptz) FROM payments_payment WHERE id = ANY(%s)",
                    [step.ids],
                ).fetchone()[0]
            span = (last.timestamp() - began) if last else span
            settled_rate = len(values) / span if span > 0 else 0.0
            p50 = percentile(values, 0.50) * 1000 if values else float("nan")
            p99 = percentile(values, 0.99) * 1000 if values else float("nan")
            busy = (busy1 - busy0) / max(1, total1 - total0)
            behind, catch_up = (0, 0.0) if args.no_audit else audit_wait(url, audit_base, args.drain)
            hooks_behind, hooks_catch_up, hooks_p99 = (
                webhooks_wait(receivers, url["payments"], step.ids, args.drain) if args.webhooks else (0, 0.0, 0.0)
            )
            cpu1 = cpu_by_part(system)
            cpu_rows.append((rate, len(values), cpu_delta(cpu0, cpu1)))
            results.append(
                (rate, step, settled_rate, p50, p99, unsettled, other, catch_up >= 0 and hooks_catch_up >= 0)
            )
            print(
                f"{rate:9.0f} {step.created:8d} {step.created / step.seconds:10.1f} {settled_rate:9.1f} {p50:8.0f} "
                f"{p99:8.0f} {unsettled:9d} {other:5d} {busy:11.0%} {behind:12d} {catch_up:8.1f}"
                + (f" {hooks_behind:12d} {hooks_catch_up:8.1f} {hooks_p99 * 1000:8.0f}" if args.webhooks else ""),
                flush=True,
            )
            failed |= step.failed_creates > 0 or other > 0
            if unsettled > step.created * 0.05:
                print("  (backlog not drained: stopping here)")
                break
        print()
        print("CPU ms per settled payment, by part (each step: from its first creation until its payments are settled")
        print("and its audit events chained):")
        parts = sorted(
            {k for _, _, row in cpu_rows for k in row}, key=lambda k: -sum(r.get(k, 0) for _, _, r in cpu_rows)
        )
        print(f"{'part':<22}" + "".join(f"{rate:>9.0f}/s" for rate, _, _ in cpu_rows))
        for part in [*parts, "total"]:
            cells = []
            for _, settled_n, row in cpu_rows:
                seconds = sum(row.values()) if part == "total" else row.get(part, 0.0)
                cells.append(f"{seconds * 1000 / max(1, settled_n):>11.1f}")
            print(f"{part:<22}" + "".join(cells))
        sustained = max(
            (
                rate
                for rate, _, settled, _, _, unsettled, _, audit_ok in results
                if not unsettled and settled >= 0.95 * rate and audit_ok
            ),
            default=0.0,
        )
        p99_at_100 = next((r[4] for r in results if r[0] == 100), None)
        if args.risk:
            per_step = [
                f"{row.get('risk', 0.0) * 1000 / max(1, n):.2f} ms at {rate:.0f}/s" for rate, n, row in cpu_rows
            ]
            print(f"risk service CPU per settled payment: {', '.join(per_step)}")
        print()
        print("Atrium payments benchmark", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(
            f"  {os.cpu_count()} cores, {platform.python_version()}, postgresql "
            f"{'embedded' if infra.embedded_postgres else 'external'}, redis "
            f"{'embedded' if infra.embedded_redis else 'external'}; ledger and payments gunicorn "
            f"{args.web_workers}x2 each, {args.workers} payments worker(s) x {args.concurrency}, relays, "
            f"{'no audit worker' if args.no_audit else '1 audit worker and the job monitor'}"
            f"{'; webhooks on (web, 1 worker, the dispatcher; payment.* to one receiver)' if args.webhooks else ''}"
            f"{'; risk screening on (the Node risk service; a portal web process for its trail)' if args.risk else ''}"
            f"{', OpenTelemetry on (file exporter)' if args.otel else ''}"
        )
        if otel_file is not None:
            size = otel_file.stat().st_size if otel_file.exists() else 0
            with contextlib.suppress(OSError), otel_file.open("rb") as spans:
                lines = sum(1 for _ in spans)
                print(f"  OpenTelemetry: {lines:,} spans exported while measured, {size / 1e6:.0f} MB")
        if not args.no_audit:
            monitor = next(p for p in system.processes if p.name == "jobs-monitor")
            with psycopg.connect(url["portal"], autocommit=True) as conn:
                jobs = conn.execute("SELECT count(*) FROM jobs_job").fetchone()[0]
            alive = monitor.proc.poll() is None
            failed |= not alive or not jobs
            print(f"  the job monitor recorded {jobs:,} tasks{'' if alive else ' and EXITED (see its log)'}")
        target = TARGET_SUSTAINED_RISK if args.risk else TARGET_SUSTAINED
        print(
            f"sustained: {sustained:.0f} settled payments/s (target ≥ {target:.0f}: "
            f"{'MET' if sustained >= target else 'MISSED'})"
        )
        if p99_at_100 is not None:
            print(
                f"p99 create → settled at 100/s: {p99_at_100:.0f} ms (target < {TARGET_P99_AT_100 * 1000:.0f}: "
                f"{'MET' if p99_at_100 < TARGET_P99_AT_100 * 1000 else 'MISSED'})"
            )
        return 1 if failed else 0
    finally:
        if receivers is not None:
            receivers.close()
        if system is not None:
            system.stop()
            spans_file = system.env.get("ATRIUM_OTEL_FILE")
            if spans_file and not args.keep_databases:  # hundreds of MB at 200/s
                Path(spans_file).unlink(missing_ok=True)
            if infra is not None:
                broker_purge(infra.redis_url)
                import redis

                with contextlib.suppress(redis.RedisError):
                    redis.Redis.from_url(infra.redis_url).delete(system.env["JOBS_STREAM"])
        if tokens is not None:
            tokens.stop()
        if infra is not None:
            if args.keep_databases:
                print("databases kept:", ", ".join(created))
                created = []
            for name in created:
                with contextlib.suppress(Exception):
                    database_drop(infra.database_url, name)
            infra.stop()


if __name__ == "__main__":
    sys.exit(main())
