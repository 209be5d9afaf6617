"""Audit trail throughput: ingest (outbox → chained row), verification, and the filtered list's latency.

Run from the repository root::

    .venv/bin/python -m bench.audit [--events 20000] [--verify-events 200000] [--list-events 5000000]

PostgreSQL and Redis are external when ``DATABASE_URL``/``REDIS_URL`` are set, otherwise embedded.
Three fresh databases are created and dropped at the end:

* **ingest**, end to end: a "ledger" database whose outbox holds ``--events`` audit events (written
  directly, as the ledger's write path would), a real Celery ``audit`` worker (portal settings, two
  processes), and the relay (``services.kit.outbox.relay_run``, default batch) publishing to the broker.
  Measured from the relay's start (its process already set up) until the portal's ``audit_event`` holds
  every event: events/s.
* **verify**: ``--verify-events`` chained through ``portal.audit.chain.ingest`` in batches of 1,000, heads
  signed along the way, the table vacuumed (as autovacuum would have), then ``manage.py audit_verify
  --json`` three times: the median events/s.
* **archive** (no target): ``manage.py audit_archive`` over the first half of the verified log (checked,
  written with inclusion proofs, read back by the standalone verifier, deleted), then ``audit_verify
  --archives`` again, which must pass.
* **list**: ``--list-events`` rows generated directly in SQL (``generate_series``; realistic spread of
  services, actions, actors, objects and request ids; the hashes are filler since only search is measured),
  vacuumed and analysed, then ``GET /api/v1/audit/events`` with filters through Django's full request
  handler (every middleware, authentication as an auditor, DRF, the query), 100 requests per filter: p50/p95.

Targets on the 2-core machine: ingest ≥ 5,000 events/s, verification ≥ 100,000 events/s, filtered list
p95 < 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from devtools.infra import REPO_ROOT, database_create, database_drop, database_url_with_name, infra_start, venv_env

TARGET_INGEST = 5_000
TARGET_VERIFY = 100_000
TARGET_LIST_P95_MS = 100.0


def _env(settings: str, database_url: str, redis_url: str) -> dict[str, str]:
    env = venv_env(dict(os.environ))
    for name in ("DATABASE_URL", "PORTAL_DATABASE_URL", "LEDGER_DATABASE_URL", "PAYMENTS_DATABASE_URL"):
        env.pop(name, None)
    service = "PORTAL" if settings == "portal.settings" else "LEDGER"
    env.update(
        {
            "ATRIUM_ENV": "test",
            "DJANGO_SETTINGS_MODULE": settings,
            f"{service}_DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ATRIUM_OUTBOX_RELAY": "off",
            "ATRIUM_VAR_DIR": str(REPO_ROOT / "var" / "bench-audit"),
            # one heads file per database: each log's signed heads are its own
            "AUDIT_HEADS_PATH": str(
                REPO_ROOT / "var" / "bench-audit" / f"heads-{database_url.rsplit('/', 1)[-1]}.jsonl"
            ),
            "LOG_LEVEL": "WARNING",
        }
    )
    return env


def run_checked(args: list[str], env: dict[str, str], timeout: float = 3600) -> str:
    """Run ``args`` in the repository with ``env``; its stdout, or RuntimeError with the end of its output."""
    done = subprocess.run(  # noqa: S603  (our own interpreter and scripts)
        args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def _migrate(manage: str, env: dict[str, str]) -> None:
    run_checked([sys.executable, manage, "migrate", "--noinput", "-v", "0"], env)


def _child(role: str, arg: str) -> None:
    """Work done inside a Django process (``python -m bench.audit --child ROLE ARG``)."""
    import django

    django.setup()
    from django.db import connection, transaction

    if role == "fill-outbox":
        import datetime as dt

        from services.kit.audit import audit_event
        from services.kit.ids import id_new

        count = int(arg)
        now = dt.datetime.now(dt.UTC)
        rows: list[Any] = []
        for n in range(count):
            body = audit_event(
                "ledger.transaction.created",
                object_type="transaction",
                object_id=f"txn_{n}",
                metadata={"reference": f"ref-{n}", "amount": n % 1000 + 1, "currency": "EUR"},
                actor={"type": "client", "id": "cli_bench", "display": "cli_bench"},
            )
            rows.append((id_new("evt"), "audit", json.dumps(body, separators=(",", ":"))))
        with transaction.atomic(), connection.cursor() as cursor:
            raw = cursor.cursor
            with raw.copy(
                "COPY kit_outbox_event (id, topic, payload, created_at, attempts, last_error) FROM STDIN"
            ) as cp:
                for event_id, topic, payload in rows:
                    cp.write_row((event_id, topic, payload, now, 0, ""))
        print(json.dumps({"written": count}))
    elif role == "relay":
        from services.kit.outbox import relay_run

        # Django is set up and the broker connection opened before the clock starts: in production the
        # relay is a thread of a running service, so its process start is not part of the pipeline.
        from workers.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection()
        print("ready", flush=True)
        sys.stdin.readline()
        began = time.perf_counter()
        total = 0
        while True:
            result = relay_run(max_batches=1000)  # the default batch (ATRIUM_OUTBOX_BATCH) or {}
            sent = sum(result.values())
            total += sent
            if not sent:
                break
        print(json.dumps({"published": total, "seconds": time.perf_counter() - began}))
    elif role == "count":
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM audit_event")
            print(json.dumps({"count": cursor.fetchone()[0]}))
    elif role == "chain":
        from portal.audit.chain import ingest
        from portal.audit.heads import head_sign

        count = int(arg)
        for start in range(0, count, 1000):
            events = [
                {
                    "id": f"evt_v_{n}",
                    "service": ("ledger", "payments", "portal")[n % 3],
                    "service_seq": n // 3 + 1,
                    "occurred_at": "2026-11-28T10:00:00.000000Z",
                    "action": "ledger.transaction.created",
                    "outcome": "success",
                    "actor": {"type": "client", "id": "cli_bench", "display": "cli_bench"},
                    "object": {"type": "transaction", "id": f"txn_{n}"},
                    "request_id": f"req_{n}",
                    "source_ip": "127.0.0.1",
                    "user_agent": "bench",
                    "changes": {},
                    "metadata": {"n": n},
                }
                for n in range(start, min(count, start + 1000))
            ]
            ingest(events)
            if start % 50_000 == 0:
                head_sign()
        head_sign()
        print(json.dumps({"chained": count}))
    elif role == "generate":
        _generate(int(arg))
    elif role == "list":
        print(json.dumps(_list_latency(int(arg))))


def _generate(count: int, *, prefixed_objects: bool = False) -> None:
    """``count`` audit_event rows in SQL, in chunks (filler hashes: only search is measured here). Request
    ``req_<g / 4>`` has four events; object ids are ``obj_<n>`` (200,000 of them, one type each), or with
    ``prefixed_objects`` named as Atrium names them: ``txn_<n>``, ``acc_<n>``, ``pay_<n>``, ``usr_<n>``."""
    from django.db import connection

    object_id = (
        "(ARRAY['txn_','acc_','pay_','usr_'])[1 + g %% 4] || (g %% 200000)"
        if prefixed_objects
        else "'obj_' || (g %% 200000)"
    )

    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_event DISABLE TRIGGER USER")
        chunk = 500_000
        for start in range(0, count, chunk):
            cursor.execute(
                """
                INSERT INTO audit_event (seq, event_id, service, service_seq, occurred_at, recorded_at, actor_type,
                    actor_id, actor_display, action, outcome, object_type, object_id, request_id, source_ip,
                    user_agent, changes, metadata, canonical, leaf_hash, hash, prev_hash)
                SELECT g, 'evt_g_' || g, (ARRAY['ledger','payments','portal'])[1 + g %% 3], g / 3 + 1,
                    timestamptz '2026-01-01' + (g * interval '5 seconds'),
                    timestamptz '2026-01-01' + (g * interval '5 seconds'),
                    (ARRAY['client','user','system'])[1 + g %% 3], 'actor_' || (g %% 1000), 'actor ' || (g %% 1000),
                    (ARRAY['ledger.transaction.created','ledger.transaction.posted','ledger.transaction.voided',
                           'ledger.account.created','ledger.account.changed','payments.payment.created',
                           'payments.payment.settled','auth.login.succeeded','auth.login.failed',
                           'portal.client.created','portal.client.secret_rotated','audit.events.listed'])[1 + g %% 12],
                    CASE WHEN g %% 50 = 0 THEN 'failure' ELSE 'success' END,
                    (ARRAY['transaction','account','payment','user'])[1 + g %% 4], OBJECT_ID,
                    'req_' || (g / 4), '10.0.' || (g %% 250) || '.' || (g %% 200), 'bench', '{}'::jsonb,
                    jsonb_build_object('n', g), '{}', '\\x00'::bytea, '\\x00'::bytea, '\\x00'::bytea
                FROM generate_series(%s, %s) AS g
                """.replace("OBJECT_ID", object_id),
                [start + 1, min(count, start + chunk)],
            )
        cursor.execute("ALTER TABLE audit_event ENABLE TRIGGER USER")
        # the steady state of a live table: vacuumed and analysed (not autovacuum racing the measurement)
        cursor.execute("VACUUM (ANALYZE) audit_event")
    print(json.dumps({"generated": count}))


def _list_latency(requests: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("bench-auditor", "a@example.com", "bench-password-123")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    filters = {
        "newest page": {},
        "service": {"service": "payments"},
        "actor": {"actor": "actor_417"},
        "action prefix": {"action": "ledger.transaction"},
        "object": {"object_type": "account", "object_id": "obj_12345"},
        "request id": {"request_id": "req_1234567"},
        "failures": {"outcome": "failure"},
        "time range": {"occurred_after": "2026-03-01T00:00:00Z", "occurred_before": "2026-03-02T00:00:00Z"},
        "service + action + outcome": {"service": "ledger", "action": "ledger.account", "outcome": "success"},
    }
    out: dict[str, Any] = {}
    for name, params in filters.items():
        times = []
        status = None
        for _ in range(requests):
            began = time.perf_counter()
            response = client.get("/api/v1/audit/events", params)
            times.append((time.perf_counter() - began) * 1000)
            status = response.status_code
        times.sort()
        out[name] = {
            "status": status,
            "p50": statistics.median(times),
            "p95": times[max(0, int(len(times) * 0.95) - 1)],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events relayed end to end (default 20000)")
    parser.add_argument("--verify-events", type=int, default=200_000, help="events chained then verified")
    parser.add_argument("--list-events", type=int, default=5_000_000, help="rows for the list latency run")
    parser.add_argument("--requests", type=int, default=100, help="requests per filter (default 100)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0

    run = uuid.uuid4().hex[:8]
    names = {k: f"atrium_bench_audit_{run}_{k}" for k in ("ledger", "portal", "verify", "list")}
    infra = infra_start("bench")
    created: list[str] = []
    worker: subprocess.Popen[bytes] | None = None
    me = [sys.executable, "-m", "bench.audit", "--child"]
    failed = False
    try:
        for name in names.values():
            database_create(infra.database_url, name)
            created.append(name)
        url = {k: database_url_with_name(infra.database_url, v) for k, v in names.items()}
        ledger_env = _env("services.ledger.settings", url["ledger"], infra.redis_url)
        portal_env = {k: _env("portal.settings", url[k], infra.redis_url) for k in ("portal", "verify", "list")}
        print("migrating…", flush=True)
        _migrate("services/ledger/manage.py", ledger_env)
        for env in portal_env.values():
            _migrate("manage.py", env)

        # 1. ingest, end to end
        print(f"ingest: writing {args.events} events to the ledger's outbox…", flush=True)
        run_checked([*me, "fill-outbox", str(args.events)], ledger_env)
        log_path = REPO_ROOT / "var" / "bench-audit" / "audit-worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            worker = subprocess.Popen(  # noqa: S603
                [
                    str(Path(sys.executable).parent / "celery"),
                    "-A",
                    "workers",
                    "worker",
                    "-Q",
                    "audit",
                    "-c",
                    "2",
                    "-n",
                    f"bench-audit-{run}@%h",
                    "--without-mingle",
                    "--without-gossip",
                    "-l",
                    "WARNING",
                ],
                env=portal_env["portal"],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        time.sleep(5)  # worker boot, before the clock starts
        relay_process = subprocess.Popen(  # noqa: S603
            [*me, "relay", "-"], env=ledger_env, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert relay_process.stdin is not None
        assert relay_process.stdout is not None
        if relay_process.stdout.readline().strip() != "ready":
            raise RuntimeError("the relay process did not start")
        began = time.perf_counter()
        relay_process.stdin.write("go\n")
        relay_process.stdin.flush()
        relay = json.loads(relay_process.stdout.read())
        if relay_process.wait(60) != 0:
            raise RuntimeError("the relay process failed")
        count = 0
        deadline = time.monotonic() + 600
        with psycopg.connect(url["portal"], autocommit=True) as watch:
            while time.monotonic() < deadline:
                count = watch.execute("SELECT count(*) FROM audit_event").fetchone()[0]
                if count >= args.events:
                    break
                time.sleep(0.05)
        ingest_seconds = time.perf_counter() - began
        ingest_rate = count / ingest_seconds
        print(f"  relayed {relay['published']} in {relay['seconds']:.2f} s; chained {count} in {ingest_seconds:.2f} s")

        # 2. verification
        print(f"verify: chaining {args.verify_events} events…", flush=True)
        run_checked([*me, "chain", str(args.verify_events)], portal_env["verify"])
        # A live log is vacuumed by autovacuum long before anyone verifies it; measure that steady state, not
        # autovacuum working through 200,000 fresh rows at the same time. Median of three runs.
        with psycopg.connect(url["verify"], autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) audit_event")
        verify_runs: list[float] = []
        for _ in range(3):
            began = time.perf_counter()
            verify_out = run_checked([sys.executable, "manage.py", "audit_verify", "--json"], portal_env["verify"])
            rate = args.verify_events / (time.perf_counter() - began)
            with contextlib.suppress(ValueError, KeyError):
                rate = float(json.loads(verify_out.strip().splitlines()[-1])["events_per_second"])
            verify_runs.append(rate)
        verify_rate = statistics.median(verify_runs)

        # 2b. archival of the first half (not a target: what a retention run costs), then verification again
        archive_dir = REPO_ROOT / "var" / "bench-audit" / f"archive-{run}"
        upto = args.verify_events // 2 + 1000  # a signed head (heads every 50,000 from 1,000)
        print(f"archive: seqs up to {upto}…", flush=True)
        began = time.perf_counter()
        command = ["manage.py", "audit_archive", "--older-than-days", "0", "--upto", str(upto)]
        archived_out = run_checked([sys.executable, *command, "--output", str(archive_dir)], portal_env["verify"])
        archive_seconds = time.perf_counter() - began
        archive_files = sorted(archive_dir.glob("*.jsonl.gz"))
        archive_bytes = sum(f.stat().st_size for f in archive_files)
        archived = sum(
            int(line.split("(")[1].split()[0]) for line in archived_out.splitlines() if "archived seqs" in line
        )
        after_out = run_checked(
            [sys.executable, "manage.py", "audit_verify", "--json", "--archives"], portal_env["verify"]
        )
        after = json.loads(after_out.strip().splitlines()[-1])
        failed |= not after["ok"] or archived != upto
        for f in archive_files:
            f.unlink()
        archive_dir.rmdir()
        # done with those databases: drop them now, so autovacuum (after the archival's deletions) does not
        # run in them during the latency measurement
        for key in ("ledger", "portal", "verify"):
            database_drop(infra.database_url, names[key])
            created.remove(names[key])

        # 3. list latency
        print(f"list: generating {args.list_events} rows…", flush=True)
        began = time.perf_counter()
        run_checked([*me, "generate", str(args.list_events)], portal_env["list"], timeout=7200)
        print(f"  generated in {time.perf_counter() - began:.0f} s; measuring…", flush=True)
        latency = json.loads(run_checked([*me, "list", str(args.requests)], portal_env["list"]))

        print()
        print("Atrium audit benchmark", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(
            f"  postgresql {'embedded' if infra.embedded_postgres else 'external'}, redis "
            f"{'embedded' if infra.embedded_redis else 'external'}, {os.cpu_count()} cores"
        )
        print(
            f"ingest, outbox → chained row: {count} events in {ingest_seconds:.2f} s = {ingest_rate:,.0f} events/s "
            f"(target ≥ {TARGET_INGEST:,}: {'MET' if ingest_rate >= TARGET_INGEST else 'MISSED'})"
        )
        print(
            f"verification: {args.verify_events} events, {verify_rate:,.0f} events/s, median of "
            f"{', '.join(f'{r:,.0f}' for r in verify_runs)} "
            f"(target ≥ {TARGET_VERIFY:,}: {'MET' if verify_rate >= TARGET_VERIFY else 'MISSED'})"
        )
        print(
            f"archival: {archived} events in {archive_seconds:.2f} s = {archived / archive_seconds:,.0f} events/s "
            f"(checked, written with proofs, read back, deleted), {archive_bytes / archived:,.0f} bytes/event "
            f"gzip'd; audit_verify --archives afterwards: {'OK' if after['ok'] else 'FAILED'} "
            f"({after['events']} live events after {after['archived']} archived, {after['events_per_second']:,} "
            "events/s, archive files checked in full)"
        )
        print(f"list over {args.list_events:,} events, {args.requests} requests per filter (ms):")
        worst = 0.0
        for name, figures in latency.items():
            worst = max(worst, figures["p95"])
            print(f"  {name:<28} status {figures['status']}  p50 {figures['p50']:7.1f}  p95 {figures['p95']:7.1f}")
            failed |= figures["status"] != 200
        print(
            f"worst p95 {worst:.1f} ms (target < {TARGET_LIST_P95_MS:.0f}: "
            f"{'MET' if worst < TARGET_LIST_P95_MS else 'MISSED'})"
        )
        return 1 if failed else 0
    finally:
        if worker is not None:
            from devtools.processes import process_group_stop

            process_group_stop(worker, 20)
        for name in created:
            with contextlib.suppress(Exception):
                database_drop(infra.database_url, name)
        infra.stop()


if __name__ == "__main__":
    sys.exit(main())
