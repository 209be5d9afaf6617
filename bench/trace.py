"""The trace API over a portal holding millions of audit events and jobs: ``GET /api/v1/trace/{id}`` latency.

Run from the repository root::

    .venv/bin/python -m bench.trace [--events 5000000] [--jobs 1000000] [--requests 200] [--database NAME]

PostgreSQL and Redis are external when ``DATABASE_URL``/``REDIS_URL`` are set, otherwise embedded. The data lives
in a named database (``atrium_bench_trace`` unless ``--database``), kept between runs: a run that finds it filled
to the same sizes goes straight to the measurement (seconds); other sizes, or ``--refill``, fill it anew.

* **data**: ``--events`` audit events from the audit benchmark's generator (``bench.audit._generate``, object
  ids named ``txn_``/``acc_``/``pay_``/``usr_``; four events per request id ``req_<n>``), ``--jobs`` jobs from the
  job benchmark's (``bench.jobs._generate``; three jobs per request id ``req_<n>``, one job in twelve a
  ``payments.drain``), and the links batch jobs record: each drain, in order, carried the next 100 request ids
  and the payment each touched (``jobs_link``), until every request id of the events is carried once. Vacuumed
  and analysed.
* **latency**: through Django's full request handler (every middleware, session authentication as an auditor,
  DRF, the selector, the ``trace.viewed`` audit record written to the outbox), ``--requests`` random ids of each
  kind after a warm-up: request ids that have both events and jobs (4 events, 3 jobs, their drain); payment ids
  (``pay_…``: 25 requests each, so about 100 events and 25 drains); and drains' task ids (``--requests / 4``;
  100 carried requests each, so the bounds cut them): p50/p95/p99.

Target on the 2-core machine: p95 < 100 ms for a request id.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from typing import Any

import psycopg

from bench.audit import run_checked
from bench.jobs import _env as jobs_env
from devtools.infra import REPO_ROOT, database_create, database_drop, database_url_with_name, infra_start

TARGET_P95_MS = 100.0
DRAIN_CARRIES = 100
PAY_OBJECTS = 200_000  # bench.audit._generate: object ids cycle over 200,000 numbers


def _env(database_url: str, redis_url: str) -> dict[str, str]:
    """The portal's environment as the job benchmark sets it, with this benchmark's own stream and var directory."""
    return jobs_env(
        database_url, redis_url, "atrium:jobs:bench-trace", ATRIUM_VAR_DIR=str(REPO_ROOT / "var" / "bench-trace")
    )


# --- inside Django (python -m bench.trace --child ROLE ARG) ----------------------------------------------------


def _child(role: str, arg: str) -> None:
    import django

    django.setup()
    spec = json.loads(arg)
    if role == "fill":
        _fill(events=spec["events"], jobs=spec["jobs"])
    elif role == "measure":
        print(json.dumps(_measure(events=spec["events"], jobs=spec["jobs"], requests=spec["requests"])))


def _fill(*, events: int, jobs: int) -> None:
    from django.db import connection

    from bench import audit as audit_bench
    from bench import jobs as jobs_bench

    began = time.perf_counter()
    audit_bench._generate(events, prefixed_objects=True)
    print(f"  {events:,} audit events in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    began = time.perf_counter()
    jobs_bench._generate(jobs)
    print(f"  {jobs:,} jobs in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    began = time.perf_counter()
    requests = events // 4 + 1  # req_0 … req_<events / 4>
    with connection.cursor() as cursor:
        # Drain n carried req_<100n> … req_<100n + 99> and the payment each touched (its event g = 4r + 2).
        cursor.execute(
            """
            WITH drains AS (
                SELECT task_id, seen_at, row_number() OVER (ORDER BY id) - 1 AS n
                FROM jobs_job WHERE name = 'payments.drain'
            ), carried AS (
                SELECT d.task_id, d.seen_at, d.n * %(per)s + i AS r
                FROM drains d CROSS JOIN generate_series(0, %(per)s - 1) AS i
                WHERE d.n * %(per)s + i < %(requests)s
            )
            INSERT INTO jobs_link (value, task_id, kind, at)
            SELECT 'req_' || r, task_id, 'request', seen_at FROM carried
            UNION ALL
            SELECT 'pay_' || ((4 * r + 2) %% %(objects)s), task_id, 'object', seen_at FROM carried
            ON CONFLICT DO NOTHING
            """,
            {"per": DRAIN_CARRIES, "requests": requests, "objects": PAY_OBJECTS},
        )
        links = cursor.rowcount
        cursor.execute(
            "UPDATE jobs_job j SET carried_requests = c.n, carried_objects = c.n FROM ("
            "SELECT task_id, count(*) FILTER (WHERE kind = 'request') AS n FROM jobs_link GROUP BY task_id) c "
            "WHERE j.task_id = c.task_id"
        )
        cursor.execute("VACUUM (ANALYZE) jobs_link")
        cursor.execute("VACUUM (ANALYZE) jobs_job")
    print(f"  {links:,} job links in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)


def _figures(times: list[float], statuses: list[int]) -> dict[str, Any]:
    times = sorted(times)

    def pct(p: float) -> float:
        return times[max(0, min(len(times) - 1, round(len(times) * p) - 1))]

    return {
        "n": len(times),
        "statuses": sorted(set(statuses)),
        "p50": statistics.median(times),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "max": times[-1],
    }


def _measure(*, events: int, jobs: int, requests: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    from portal.identity.roles import roles_sync
    from portal.jobs.models import Job

    roles_sync()
    user, _ = get_user_model().objects.get_or_create(username="bench-trace-auditor", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name="auditor"))
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    rng = random.Random(17)  # noqa: S311  (the same ids every run; nothing secret)
    both = max(1, min(events // 4, jobs // 3))  # request ids with events and jobs
    carrying = Job.objects.filter(name="payments.drain", carried_requests__gt=0).order_by("id")
    drains = list(carrying.values_list("task_id", flat=True)[:2000])
    kinds = {
        "request id": [f"req_{rng.randrange(both)}" for _ in range(requests)],
        "payment id": [f"pay_{4 * rng.randrange(min(PAY_OBJECTS, max(events, 4)) // 4) + 2}" for _ in range(requests)],
        "drain task id": [rng.choice(drains) for _ in range(max(1, requests // 4))] if drains else [],
    }
    out: dict[str, Any] = {}
    sizes: dict[str, list[int]] = {}
    for name, ids in kinds.items():
        for value in ids[:10]:  # warm-up: connections, caches, the first plans
            client.get(f"/api/v1/trace/{value}")
        times: list[float] = []
        statuses: list[int] = []
        sizes[name] = []
        for value in ids:
            began = time.perf_counter()
            response = client.get(f"/api/v1/trace/{value}")
            times.append((time.perf_counter() - began) * 1000)
            statuses.append(response.status_code)
            if response.status_code == 200:
                body = response.json()
                sizes[name].append(len(body["timeline"]))
        if times:
            out[name] = _figures(times, statuses) | {
                "entries_median": statistics.median(sizes[name]) if sizes[name] else 0
            }
    return out


# --- the run ---------------------------------------------------------------------------------------------------


def _filled(url: str) -> dict[str, int] | None:
    """The sizes the database was filled to (None: never filled, or not completely)."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT events, jobs FROM bench_trace_filled").fetchone()
    except psycopg.Error:
        return None
    return {"events": row[0], "jobs": row[1]} if row else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000, help="audit events (default 5000000)")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs (default 1000000)")
    parser.add_argument("--requests", type=int, default=200, help="lookups per kind of id (default 200)")
    parser.add_argument("--database", default="atrium_bench_trace", help="the database kept between runs")
    parser.add_argument("--refill", action="store_true", help="fill the database anew even if it is filled")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0

    infra = infra_start("bench")
    me = [sys.executable, "-m", "bench.trace", "--child"]
    sizes = {"events": args.events, "jobs": args.jobs}
    try:
        url = database_url_with_name(infra.database_url, args.database)
        env = _env(url, infra.redis_url)
        filled = _filled(url)
        if args.refill or filled != sizes:
            print(f"filling {args.database}: {args.events:,} audit events, {args.jobs:,} jobs…", flush=True)
            database_drop(infra.database_url, args.database)
            database_create(infra.database_url, args.database)
            run_checked([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env)
            began = time.perf_counter()
            run_checked([*me, "fill", json.dumps(sizes)], env, timeout=4 * 3600)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE TABLE bench_trace_filled (events bigint, jobs bigint)")
                conn.execute("INSERT INTO bench_trace_filled VALUES (%s, %s)", [args.events, args.jobs])
            print(f"  filled in {time.perf_counter() - began:.0f} s", flush=True)
        else:
            print(f"{args.database} already holds {args.events:,} audit events and {args.jobs:,} jobs", flush=True)
            # migrations added since the fill (none touch these tables' data)
            run_checked([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env)
        with psycopg.connect(url, autocommit=True) as conn:
            counts = {
                table: conn.execute(f"SELECT reltuples::bigint FROM pg_class WHERE relname = '{table}'").fetchone()[0]  # noqa: S608
                for table in ("audit_event", "jobs_job", "jobs_link")
            }
            # the audit records of earlier runs' lookups: not part of the data
            conn.execute("TRUNCATE kit_outbox_event")
        spec = json.dumps({**sizes, "requests": args.requests})
        figures = json.loads(run_checked([*me, "measure", spec], env).strip().splitlines()[-1])

        print()
        print("Atrium trace benchmark", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(
            f"  postgresql {'embedded' if infra.embedded_postgres else 'external'}, {os.cpu_count()} cores; "
            f"about {counts['audit_event']:,} audit events, {counts['jobs_job']:,} jobs, {counts['jobs_link']:,} "
            "job links (planner estimates)"
        )
        print("GET /api/v1/trace/{id} as an auditor, full request handler (ms):")
        failed = False
        for name, f in figures.items():
            print(
                f"  {name:<14} n={f['n']:<4} status {','.join(map(str, f['statuses']))}  p50 {f['p50']:6.1f}  "
                f"p95 {f['p95']:6.1f}  p99 {f['p99']:6.1f}  max {f['max']:6.1f}  "
                f"(median {f['entries_median']:g} timeline entries)"
            )
            failed |= f["statuses"] != [200]
        p95 = figures["request id"]["p95"]
        verdict = "MET" if p95 < TARGET_P95_MS else "MISSED"
        print(f"request id p95 {p95:.1f} ms (target < {TARGET_P95_MS:.0f}: {verdict})")
        return 1 if failed or p95 >= TARGET_P95_MS else 0
    finally:
        infra.stop()


if __name__ == "__main__":
    sys.exit(main())
