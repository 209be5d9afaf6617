"""Webhooks delivery: events through the real path to local receivers, and what it costs the service.

Run from the repository root::

    .venv/bin/python -m bench.webhooks [--rates 300,350,400] [--seconds 15] [--latency-seconds 20] [--quick]

PostgreSQL and Redis are external when ``DATABASE_URL``/``REDIS_URL`` are set, otherwise embedded. Fresh
databases for payments (only its outbox is used) and webhooks are created, migrated and dropped at the end.
Every part runs as in production (``ATRIUM_ENV=production``), each its own process: the webhooks service under
gunicorn (its API creates the endpoints), ``--workers`` webhooks Celery workers (``webhooks.ingest``), the
dispatcher (``manage.py webhooks_dispatch``), and the payments outbox relay. The bench writes ``payment.created``
events into the payments outbox (topic ``events``, the row the payments service writes), open loop, evenly
spaced in small transactions; the relay publishes them to ``webhooks.ingest``, the worker turns each into a
message and its deliveries, the dispatcher sends them. The receivers (``tests/webhook_receivers.py``) run in a
process of their own; they verify one delivery in ``--verify-every`` with ``standardwebhooks`` (every one with
``--verify-every 1``) and record each delivery's arrival.

Endpoints: three healthy receivers subscribed to everything (``*``); a slow one answering after 2 s and a dead
one (a closed port: connections refused), both subscribed to everything too.

Measured:
1. Latency at ``--latency-rate`` (100) events/s for ``--latency-seconds``: event commit (the body's ``timestamp``,
   stamped in the transaction that writes the event) → arrival at a healthy receiver, p50/p99, first with the
   slow and dead endpoints disabled, then with them enabled (the isolation ratio: p99 with / p99 without).
2. Throughput: each of ``--rates`` events/s for ``--seconds`` with all five endpoints: successful deliveries/s
   to the healthy endpoints (unique webhook-ids, from the first event to the last arrival) and whether all
   arrived within ``--drain`` seconds. Sustained = the highest step all of whose deliveries arrived, at ≥ 95 %
   of the offered deliveries/s.
3. CPU of each part (from /proc: each process with its children; PostgreSQL's and Redis's servers; the
   receivers; this bench) per step: % of one core and ms per healthy delivery.

Targets on the 2-core machine: ≥ 1,000 successful deliveries/s sustained to the healthy endpoints; p99 commit →
delivery < 1 s at 100 events/s; healthy p99 with the slow and dead endpoints ≤ 1.2 times their p99 without them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.ledger import machine_ticks, percentile
from bench.payments import System, Tokens, _clean_env, broker_purge, cpu_by_part, cpu_delta, wait_ready
from devtools.infra import (
    REPO_ROOT,
    Infra,
    database_create,
    database_drop,
    database_url_with_name,
    free_port,
    infra_start,
)
from devtools.loadkit import process_cpu
from tests.webhook_events import outbox_write, payment_event
from tests.webhook_receivers import Receivers, closed_port, secret_new

TARGET_DELIVERIES = 1000.0
TARGET_P99 = 1.0
TARGET_RATIO = 1.2
HEALTHY = ("healthy_1", "healthy_2", "healthy_3")
LOG_DIR = REPO_ROOT / "var" / "bench-webhooks"
SCRIPTS = {"payments": "services/payments/manage.py", "webhooks": "services/webhooks/manage.py"}


def manage(service: str, env: dict[str, str], *args: str) -> None:
    import subprocess

    done = subprocess.run(  # noqa: S603  (fixed arguments)
        [sys.executable, SCRIPTS[service], *args],
        env={**env, "DJANGO_SETTINGS_MODULE": f"services.{service}.settings", "ATRIUM_ENV": "test"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{service} {args} failed:\n{done.stdout}\n{done.stderr}")


@dataclass
class Producer:
    """Writes ``payment.created`` events to the payments outbox open loop at ``rate``/s for ``seconds``: every
    ``tick`` seconds one transaction with the events due by then."""

    database_url: str
    tick: float = 0.01
    objects: list[str] = field(default_factory=list)
    late: float = 0.0  # the most the producer fell behind its schedule, seconds

    def run(self, rate: float, seconds: float) -> tuple[list[str], float, float]:
        """Return (payment ids written, first write's time, last write's time) (``time.time()``)."""
        ids: list[str] = []
        total = int(rate * seconds)
        began = time.monotonic()
        first = last = time.time()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            written = 0
            while written < total:
                due = min(total, int((time.monotonic() - began) * rate) + 1)
                if due > written:
                    self.late = max(self.late, time.monotonic() - began - written / rate)
                    events = [
                        payment_event("payment.created", source="acc_bench_source", destination="acc_bench_dest")
                        for _ in range(due - written)
                    ]
                    outbox_write(conn, events)
                    if not written:
                        first = time.time()
                    last = time.time()
                    ids.extend(e["data"]["id"] for e in events)
                    written = due
                time.sleep(self.tick)
        return ids, first, last


@dataclass
class Arrivals:
    """What the healthy receivers got for one set of events."""

    expected: int
    delivered: int  # (receiver, object) pairs answered 2xx, unique
    duplicates: int
    unverified: int  # verified=False: a bad signature (never expected)
    lags: list[float]
    last_arrival: float


def arrivals(receivers: Receivers, objects: set[str]) -> Arrivals:
    lags: list[float] = []
    seen: set[tuple[str, str]] = set()
    duplicates = unverified = 0
    last = 0.0
    for name in HEALTHY:
        for d in receivers.deliveries(name):
            if d.object_id not in objects:
                continue
            if d.verified is False:
                unverified += 1
            if not d.ok:
                continue
            key = (name, d.object_id)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            last = max(last, d.received_at)
            if d.lag is not None:
                lags.append(d.lag)
    return Arrivals(len(objects) * len(HEALTHY), len(seen), duplicates, unverified, sorted(lags), last)


def wait_arrivals(receivers: Receivers, objects: set[str], drain: float) -> Arrivals:
    deadline = time.monotonic() + drain
    while True:
        got = arrivals(receivers, objects)
        if got.delivered >= got.expected or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="250,300,350,400", help="offered events/s of the throughput steps")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per throughput step (default 15)")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for a step's deliveries")
    parser.add_argument("--latency-rate", type=float, default=100.0, help="events/s of the latency phases")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="seconds of each latency phase")
    parser.add_argument("--workers", type=int, default=1, help="webhooks Celery worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=1, help="prefork children per worker (default 1)")
    parser.add_argument("--dispatchers", type=int, default=1, help="dispatcher processes (default 1)")
    parser.add_argument("--verify-every", type=int, default=10, help="receivers verify one delivery in N")
    parser.add_argument("--no-faulty", action="store_true", help="leave the slow and dead endpoints out entirely")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 s phases, one step at 350/s")
    parser.add_argument("--keep-databases", action="store_true", help="leave the databases for inspection")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.seconds, args.latency_seconds, args.drain = "350", 5.0, 5.0, 20.0
    return args


def _cpu_table(rows: list[tuple[str, float, int, dict[str, float]]]) -> list[str]:
    """Lines: CPU by part per phase, as % of one core and ms per healthy delivery."""
    parts = sorted({k for _, _, _, row in rows for k in row}, key=lambda k: -sum(r.get(k, 0) for *_, r in rows))
    lines = [f"{'part':<22}" + "".join(f"{label:>22}" for label, *_ in rows)]
    for part in [*parts, "total"]:
        cells = []
        for _, seconds, delivered, row in rows:
            used = sum(row.values()) if part == "total" else row.get(part, 0.0)
            cells.append(f"{used / seconds:>9.0%} {used * 1000 / max(1, delivered):>8.2f} ms")
        lines.append(f"{part:<22}" + "".join(f"{c:>22}" for c in cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    run_id = uuid.uuid4().hex[:8]
    names = {k: f"atrium_bench_wh_{run_id}_{k}" for k in ("payments", "webhooks")}
    infra: Infra | None = None
    system: System | None = None
    tokens: Tokens | None = None
    receivers: Receivers | None = None
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
        from cryptography.fernet import Fernet

        env = _clean_env()
        env.pop("WEBHOOKS_DATABASE_URL", None)
        env.update(
            ATRIUM_ENV="production",
            SECRET_KEY=secrets.token_urlsafe(48)[:64],
            ALLOWED_HOSTS="127.0.0.1",
            SECURE_SSL_REDIRECT="false",
            REDIS_URL=infra.redis_url,
            JWT_JWKS_URL=tokens.url,
            ATRIUM_TOKEN_URL=tokens.token_url,
            PAYMENTS_DATABASE_URL=url["payments"],
            WEBHOOKS_DATABASE_URL=url["webhooks"],
            WEBHOOKS_SECRET_KEYS=Fernet.generate_key().decode(),
            WEBHOOKS_ALLOWED_NETWORKS="127.0.0.1/32",
            ATRIUM_OUTBOUND_ALLOW_NETWORKS="127.0.0.1/32",
            PAYMENTS_CLIENT_ID="cli_payments_bench",
            PAYMENTS_CLIENT_SECRET="bench",
            AUDIT_SIGNING_KEY_FILE="",
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="WARNING",
            JOBS_STREAM=f"atrium:jobs:bench-webhooks-{run_id}",
        )
        print("migrating…", flush=True)
        for service in ("payments", "webhooks"):
            manage(service, env, "migrate", "--noinput", "-v", "0")
        system = System(env)
        bindir = Path(sys.executable).parent
        port = free_port()
        web = system.start(
            "webhooks-web",
            [str(bindir / "gunicorn"), "services.webhooks.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            DJANGO_SETTINGS_MODULE="services.webhooks.settings",
        )
        web_url = f"http://127.0.0.1:{port}"
        wait_ready(web_url, web)
        for n in range(args.workers):
            system.start(
                f"webhooks-worker-{n}",
                [
                    str(bindir / "celery"),
                    "-A",
                    "workers",
                    "worker",
                    "-Q",
                    "webhooks",
                    "-c",
                    str(args.concurrency),
                    "-n",
                    f"bench-webhooks-{run_id}-{n}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "WARNING",
                ],
                DJANGO_SETTINGS_MODULE="services.webhooks.settings",
            )
        for n in range(args.dispatchers):
            system.start(
                f"webhooks-dispatcher-{n}",
                [sys.executable, SCRIPTS["webhooks"], "webhooks_dispatch"],
                DJANGO_SETTINGS_MODULE="services.webhooks.settings",
            )
        system.start(
            "payments-relay",
            [sys.executable, SCRIPTS["payments"], "outbox_relay"],
            DJANGO_SETTINGS_MODULE="services.payments.settings",
        )
        receivers = Receivers(process=True)
        http = httpx.Client(
            base_url=web_url, timeout=30, headers={"Authorization": f"Bearer {tokens.token('webhooks')}"}
        )
        endpoints: dict[str, str] = {}

        def endpoint(name: str, target: str, secret: str, **fields: Any) -> None:
            body = {"url": target, "event_types": ["*"], "secret": secret, "description": f"bench {name}", **fields}
            response = http.post("/api/v1/endpoints", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"endpoint {name}: {response.status_code} {response.text}")
            endpoints[name] = response.json()["id"]

        for name in HEALTHY:
            secret = secret_new()
            endpoint(name, receivers.add(name, secret=secret, verify_every=args.verify_every), secret)
        if not args.no_faulty:
            secret = secret_new()
            endpoint("slow", receivers.add("slow", secret=secret, delay=2.0, verify_every=args.verify_every), secret)
            endpoint("dead", f"http://127.0.0.1:{closed_port()}/hooks/dead", secret_new())

        def faulty(enabled: bool) -> None:
            for name in ("slow", "dead") if not args.no_faulty else ():
                action = "enable" if enabled else "disable"
                body = {} if enabled else {"reason": "bench: the phase without them"}
                response = http.post(f"/api/v1/endpoints/{endpoints[name]}/{action}", json=body)
                if response.status_code not in (200, 204):
                    raise RuntimeError(f"{action} {name}: {response.status_code} {response.text}")

        producer = Producer(url["payments"])

        def cpu() -> dict[int, tuple[str, float]]:
            snapshot = cpu_by_part(system)
            if receivers is not None and receivers._proc is not None:  # the receivers' process is ours too
                for pid, (session, _uid, _name, seconds) in process_cpu().items():
                    if session == receivers._proc.pid or pid == receivers._proc.pid:
                        snapshot[pid] = ("receivers (bench)", seconds)
            return snapshot

        print("warming up…", flush=True)
        faulty(False)
        warm, _, _ = producer.run(20, 3)
        got = wait_arrivals(receivers, set(warm), 60)
        if got.delivered < got.expected:
            raise RuntimeError(f"warm-up: {got.delivered} of {got.expected} deliveries arrived")

        cpu_rows: list[tuple[str, float, int, dict[str, float]]] = []

        def phase(label: str, rate: float, seconds: float, drain: float) -> tuple[Arrivals, float, float]:
            cpu0 = cpu()
            busy0, total0 = machine_ticks()
            ids, first, _last = producer.run(rate, seconds)
            got = wait_arrivals(receivers, set(ids), drain)
            span = max(1e-6, got.last_arrival - first)
            busy1, total1 = machine_ticks()
            cpu_rows.append((label, span, got.delivered, cpu_delta(cpu0, cpu())))
            return got, span, (busy1 - busy0) / max(1, total1 - total0)

        print(
            f"{'phase':<34} {'events':>7} {'deliveries':>10} {'missing':>7} {'dup':>4} {'deliv/s':>8} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'busy':>5}",
            flush=True,
        )

        def line(label: str, got: Arrivals, span: float, busy: float) -> None:
            p50 = percentile(got.lags, 0.5) * 1000
            p99 = percentile(got.lags, 0.99) * 1000
            print(
                f"{label:<34} {got.expected // len(HEALTHY):>7} {got.delivered:>10} {got.expected - got.delivered:>7} "
                f"{got.duplicates:>4} {got.delivered / span:>8.0f} {p50:>7.0f} {p99:>7.0f} {busy:>5.0%}",
                flush=True,
            )

        latency: dict[str, float] = {}
        for label, enabled in (("without", False), ("with", True)):
            if args.no_faulty and enabled:
                continue
            faulty(enabled)
            got, span, busy = phase(
                f"{args.latency_rate:.0f}/s, slow+dead {label}", args.latency_rate, args.latency_seconds, args.drain
            )
            line(f"{args.latency_rate:.0f}/s, slow+dead {label}", got, span, busy)
            latency[label] = percentile(got.lags, 0.99)
            failed |= got.delivered < got.expected or got.unverified > 0

        results: list[tuple[float, float, bool]] = []
        for rate in rates:
            label = f"{rate:.0f}/s{'' if args.no_faulty else ', slow+dead on'}"
            got, span, busy = phase(label, rate, args.seconds, args.drain)
            line(label, got, span, busy)
            failed |= got.unverified > 0
            results.append((rate, got.delivered / span, got.delivered >= got.expected))
            if got.delivered < got.expected * 0.95:
                print("  (backlog not drained: stopping here)")
                break

        print()
        print("CPU by part: % of one core over each phase, ms per healthy delivery")
        for row in _cpu_table(cpu_rows):
            print(row)
        with psycopg.connect(url["webhooks"], autocommit=True) as conn:
            states = conn.execute(
                "SELECT e.description, d.state, count(*) FROM webhooks_delivery d "
                "JOIN webhooks_endpoint e ON e.id = d.endpoint_id GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            attempts = conn.execute(
                "SELECT error, count(*) FROM webhooks_attempt GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        print(
            "deliveries by endpoint and state:", ", ".join(f"{d.removeprefix('bench ')}/{s}: {n}" for d, s, n in states)
        )
        print("attempts by error:", ", ".join(f"{e or 'ok'}: {n}" for e, n in attempts))
        print(f"the producer fell behind its schedule by at most {producer.late * 1000:.0f} ms")

        sustained = max(
            (
                delivered
                for rate, delivered, complete in results
                if complete and delivered >= 0.95 * rate * len(HEALTHY)
            ),
            default=0.0,
        )
        print()
        print("Atrium webhooks benchmark", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(
            f"  {os.cpu_count()} cores, {platform.python_version()}, postgresql "
            f"{'embedded' if infra.embedded_postgres else 'external'}, redis "
            f"{'embedded' if infra.embedded_redis else 'external'}; {args.workers} webhooks worker(s) x "
            f"{args.concurrency}, {args.dispatchers} dispatcher(s), the payments relay; receivers verify 1 in "
            f"{args.verify_every}"
        )
        print(
            f"sustained: {sustained:.0f} successful deliveries/s to the 3 healthy endpoints (target ≥ "
            f"{TARGET_DELIVERIES:.0f}: {'MET' if sustained >= TARGET_DELIVERIES else 'MISSED'})"
        )
        p99 = latency.get("with", latency.get("without", float("nan")))
        print(
            f"p99 commit → delivery at {args.latency_rate:.0f}/s: {p99 * 1000:.0f} ms (target < "
            f"{TARGET_P99 * 1000:.0f}: {'MET' if p99 < TARGET_P99 else 'MISSED'})"
        )
        if "with" in latency and "without" in latency:
            ratio = latency["with"] / max(latency["without"], 1e-9)
            print(
                f"healthy p99 with the slow and dead endpoints / without: {latency['with'] * 1000:.0f} / "
                f"{latency['without'] * 1000:.0f} ms = {ratio:.2f}x (target ≤ {TARGET_RATIO}: "
                f"{'MET' if ratio <= TARGET_RATIO else 'MISSED'})"
            )
        return 1 if failed else 0
    finally:
        if receivers is not None:
            receivers.close()
        if system is not None:
            system.stop()
            if infra is not None:
                broker_purge(infra.redis_url)
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
