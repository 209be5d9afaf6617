"""The front door (#18): the payments stats behind the home, the schedule page and the default task list, and the
catalog graph's layout at 10 services / 40 processes.

Run from the repository root::

    .venv/bin/python -m bench.front_door [--payments 1200000] [--jobs 300000] [--runs 20] [--database NAME]
    .venv/bin/python -m bench.front_door --quick   # small sizes, its own database: a smoke run of a few seconds

PostgreSQL and Redis are external when ``DATABASE_URL``/``REDIS_URL`` are set, otherwise embedded. The data lives
in two named databases kept between runs: the portal's (``atrium_bench_front_door`` unless ``--database``) and
the payments service's (the same name with ``_payments``). A run that finds them filled to the same sizes goes
straight to the measurement; other sizes, or ``--refill``, fill them anew (each with its own real migrations).

* **payments stats** (``GET /api/v1/payments/stats``, the home's payments panel): ``--payments`` payments in
  ``payments_payment`` generated in SQL over the 24 hours before the fill (status mix: 90 % settled, 3 % rejected,
  2 % failed, 1 % canceled, 2 % processing, 1 % screening, 1 % created; currencies 50 % EUR, 30 % USD, 15 % GBP,
  3 % CHF, 1 % JPY), vacuumed and analysed. Then ``--runs`` times each, interleaved, after a warm-up, for ``1h``
  and ``24h``: the service's path (``services.payments.selectors.payment_stats``, the selector the API view calls,
  with ``now`` = the fill's time so kept data stays in its window) and the baseline: the best raw SQL for the same
  answer (one ``GROUP BY status, currency`` with ``count(*)`` and ``sum(amount)`` over the same window, psycopg,
  its own connection): p50/p95 of each and the ratio service/baseline of the p50s.
* **schedule page** (``portal.jobs.selectors.schedule_list``): the code's beat schedule (``workers/beat.py``)
  synced into django-celery-beat's tables (``schedule_sync``), ``--jobs`` jobs in ``jobs_job`` over 7 days, 80 %
  housekeeping runs of the periodic tasks (``periodic`` and ``housekeeping`` set as the monitor records them), the
  rest work tasks (drains, domain events, and the two periodic tasks that are not housekeeping): p50/p95 of
  ``schedule_list()`` and ``schedule_list(housekeeping=False)``, and of the task list's default query (housekeeping
  hidden, the first page of 50: ``jobs_page(jobs_filter(housekeeping_hidden(TaskFilters(), shown=False)))``).
* **catalog graph**: the catalog of the readability test (``tests/portal/test_catalog_graph_readable.py``:
  10 services of 40 processes, imported from it), in a transaction rolled back at the end; ``graph_nodes`` once,
  then ``portal.ui.charts.graph.layout`` 20 times: mean and max, the boxes, edge crossings and overlaps.

Prints a report and, last, every figure as one line of JSON. Exits 1 if a measurement went wrong (a stats answer
that differs from the baseline's, a graph that does not hold ten boxes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import psycopg

from bench.audit import run_checked
from bench.jobs import _env as jobs_env
from devtools.infra import REPO_ROOT, database_create, database_drop, database_url_with_name, infra_start

LOG_DIR = REPO_ROOT / "var" / "bench-front-door"
QUICK = {"payments": 24_000, "jobs": 6_000, "runs": 5, "database": "atrium_bench_front_door_quick"}
LAYOUT_RUNS = 20
BASELINE_SQL = (
    "SELECT status, currency, count(*), sum(amount) FROM payments_payment "
    "WHERE created_at >= %s AND created_at < %s GROUP BY status, currency"
)


def _portal_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The portal's environment as the job benchmark sets it, with this benchmark's own stream and var directory."""
    return jobs_env(database_url, redis_url, "atrium:jobs:bench-front-door", ATRIUM_VAR_DIR=str(LOG_DIR))


def _payments_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **_portal_env(database_url, redis_url),
        "DJANGO_SETTINGS_MODULE": "services.payments.settings",
        "PAYMENTS_DATABASE_URL": database_url,
    }


def _pct(times: list[float], p: float) -> float:
    times = sorted(times)
    return times[max(0, min(len(times) - 1, round(len(times) * p) - 1))]


def _figures(times: list[float]) -> dict[str, float]:
    return {"n": len(times), "p50": statistics.median(times), "p95": _pct(times, 0.95), "max": max(times)}


# --- inside Django (python -m bench.front_door --child ROLE ARG) ----------------------------------------------


def _child(role: str, arg: str) -> None:
    import django

    django.setup()
    spec = json.loads(arg)
    if role == "fill-payments":
        _fill_payments(spec["payments"])
    elif role == "fill-jobs":
        _fill_jobs(spec["jobs"])
    elif role == "measure-payments":
        print(json.dumps(_measure_payments(spec["runs"])))
    elif role == "measure-portal":
        print(json.dumps(_measure_portal(spec["runs"])))


def _fill_payments(count: int) -> None:
    """``count`` payments over the 24 hours before now (newest last), in chunks; the time it ends at is kept in
    ``bench_front_door_payments`` for the measurement's ``now``."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        until = cursor.fetchone()[0]
        chunk = 200_000
        for start in range(0, count, chunk):
            cursor.execute(
                """
                INSERT INTO payments_payment (id, client_id, amount, currency, source_account, destination_account,
                    description, metadata, status, status_history, ledger_transaction, hold_status, failure_code,
                    failure_message, attempts, processing_errors, request_id, trace_parent, created_at, updated_at)
                SELECT 'pay_bench' || lpad(g::text, 10, '0'), 'cli_bench', 100 + (g * 7919) %% 250000, c.currency,
                    'acc_src' || (g %% 5000), 'acc_dst' || ((g * 31) %% 5000), '', '{}'::jsonb, s.status, '[]'::jsonb,
                    CASE WHEN s.status = 'settled' THEN 'txn_bench' || g ELSE '' END,
                    CASE WHEN s.status = 'settled' THEN 'posted' WHEN s.status = 'processing' THEN 'pending'
                        ELSE '' END,
                    CASE WHEN s.status IN ('rejected', 'failed') THEN 'bench' ELSE '' END, '', 0, 0,
                    'req_bench' || g, '', t, t + interval '150 ms'
                FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
                CROSS JOIN LATERAL (SELECT CASE
                    WHEN g %% 100 < 90 THEN 'settled' WHEN g %% 100 < 93 THEN 'rejected'
                    WHEN g %% 100 < 95 THEN 'failed' WHEN g %% 100 < 96 THEN 'canceled'
                    WHEN g %% 100 < 98 THEN 'processing' WHEN g %% 100 < 99 THEN 'screening' ELSE 'created'
                    END AS status) AS s
                CROSS JOIN LATERAL (SELECT CASE
                    WHEN g %% 97 < 49 THEN 'EUR' WHEN g %% 97 < 78 THEN 'USD' WHEN g %% 97 < 93 THEN 'GBP'
                    WHEN g %% 97 < 96 THEN 'CHF' ELSE 'JPY' END AS currency) AS c
                CROSS JOIN LATERAL (
                    SELECT %(until)s::timestamptz - interval '24 hours'
                        + ((g - 1) * (interval '24 hours' / %(count)s)) AS t
                ) AS times
                """,
                {"first": start + 1, "last": min(count, start + chunk), "until": until, "count": count},
            )
        cursor.execute("VACUUM (ANALYZE) payments_payment")
        cursor.execute("CREATE TABLE bench_front_door_payments (payments bigint, until timestamptz)")
        cursor.execute("INSERT INTO bench_front_door_payments VALUES (%s, %s)", [count, until])


def _measure_payments(runs: int) -> dict[str, Any]:
    from django.db import connection

    from services.payments.selectors import STATS_WINDOWS, payment_stats

    with connection.cursor() as cursor:
        cursor.execute("SELECT payments, until FROM bench_front_door_payments")
        count, until = cursor.fetchone()
    # prepare_threshold=None: a custom plan for each window. psycopg's default prepares the statement on its sixth
    # run, and PostgreSQL's generic plan for a range of unknown width is an index scan that takes 24 h (every row)
    # at 1.5-2x the parallel sequential scan's time. Django binds on the client: never prepared either.
    baseline = psycopg.connect(os.environ["PAYMENTS_DATABASE_URL"], autocommit=True, prepare_threshold=None)
    out: dict[str, Any] = {"payments": count, "until": until.isoformat()}
    agree = True
    with baseline:
        for window, span in STATS_WINDOWS.items():
            since = until - span

            def service(window: str = window) -> Any:
                return payment_stats(window=window, now=until)

            def raw(since: Any = since) -> list[tuple[Any, ...]]:
                return baseline.execute(BASELINE_SQL, [since, until]).fetchall()

            for _ in range(3):  # warm-up: connections, caches, the first plans
                service()
                raw()
            times: dict[str, list[float]] = {"service": [], "baseline": []}
            for _ in range(runs):
                for name, call in (("service", service), ("baseline", raw)):
                    began = time.perf_counter()
                    call()
                    times[name].append((time.perf_counter() - began) * 1000)
            # the same answer both ways
            found = {(s.status, c.currency): (c.count, c.amount) for s in service().statuses for c in s.amounts}
            rows = {(st, cur): (n, int(total)) for st, cur, n, total in raw()}
            agree &= found == rows
            out[window] = {
                "payments": sum(n for n, _ in rows.values()),
                "service": _figures(times["service"]),
                "baseline": _figures(times["baseline"]),
            }
            out[window]["ratio_p50"] = out[window]["service"]["p50"] / out[window]["baseline"]["p50"]
    out["agree"] = agree
    return out


def _fill_jobs(count: int) -> None:
    """The code's beat schedule synced, then ``count`` jobs over the last 7 days: 80 % housekeeping runs of its
    periodic tasks, 20 % work (drains, domain events, the periodic tasks that are not housekeeping)."""
    from django.db import connection

    from portal.jobs import services
    from workers.beat import BEAT_SCHEDULE

    services.schedule_sync(entries=BEAT_SCHEDULE)
    work_periodic = ["ledger.integrity_check", "payments.reconcile"]  # not marked housekeeping in workers/*.py
    chores = sorted(name for name in BEAT_SCHEDULE if name not in work_periodic)
    # (task name, periodic entry): 8 of every 10 jobs a chore, 2 work
    kinds = [[BEAT_SCHEDULE[name]["task"], name, "true"] for name in chores]
    work = [["payments.drain", "", "false"], ["payments.domain_event", "", "false"]]
    work += [[BEAT_SCHEDULE[name]["task"], name, "false"] for name in work_periodic]
    with connection.cursor() as cursor:
        chunk = 100_000
        for start in range(0, count, chunk):
            cursor.execute(
                """
                INSERT INTO jobs_job (task_id, name, service, queue, state, worker, args, kwargs, request_id,
                    parent_id, root_id, retry_of, retries, seen_at, queued_at, received_at, started_at, finished_at,
                    last_event_at, runtime_ms, result, exception_type, exception_message, traceback,
                    carried_requests, carried_objects, housekeeping, periodic)
                SELECT md5(g::text || 'front-door')::uuid::text, k.name, split_part(k.name, '.', 1),
                    split_part(k.name, '.', 1), CASE WHEN g %% 50 = 0 THEN 'failed' ELSE 'succeeded' END,
                    split_part(k.name, '.', 1) || '@host-' || (g %% 3), '[]'::jsonb, '{}'::jsonb,
                    CASE WHEN k.periodic = '' THEN 'req_' || g ELSE '' END, '', '', '', 0,
                    t, t, t + interval '2 ms', t + interval '3 ms', t + interval '40 ms', t + interval '40 ms',
                    37.5, '', CASE WHEN g %% 50 = 0 THEN 'UpstreamUnavailable' ELSE '' END,
                    CASE WHEN g %% 50 = 0 THEN 'the ledger did not answer' ELSE '' END, '', 0, 0,
                    k.housekeeping, k.periodic
                FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
                CROSS JOIN LATERAL (
                    SELECT (CASE WHEN g %% 10 < 8 THEN %(chores)s::text[] ELSE %(work)s::text[] END) AS pick
                ) AS p
                CROSS JOIN LATERAL (
                    SELECT p.pick[1 + (g / 10) %% (array_length(p.pick, 1))][1] AS name,
                        p.pick[1 + (g / 10) %% (array_length(p.pick, 1))][2] AS periodic,
                        p.pick[1 + (g / 10) %% (array_length(p.pick, 1))][3]::boolean AS housekeeping
                ) AS k
                CROSS JOIN LATERAL (
                    SELECT now() - interval '7 days' + (g * (interval '7 days' / %(count)s)) AS t
                ) AS times
                """,
                {"first": start + 1, "last": min(count, start + chunk), "chores": kinds, "work": work, "count": count},
            )
        cursor.execute("VACUUM (ANALYZE) jobs_job")


def _timed(call: Any, runs: int) -> dict[str, float]:
    for _ in range(3):  # warm-up
        call()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return _figures(times)


def _measure_portal(runs: int) -> dict[str, Any]:
    from django.db import transaction
    from django.utils import timezone

    from portal.catalog.pages.graph import graph_nodes
    from portal.jobs.models import Job
    from portal.jobs.selectors import TaskFilters, housekeeping_hidden, jobs_filter, jobs_page, schedule_list
    from portal.ui.charts.graph import boxes_overlap, edge_crossings, layout
    from tests.portal.test_catalog_graph_readable import MIN_GAP, _catalog_of_ten

    out: dict[str, Any] = {
        "jobs": Job.objects.count(),
        "housekeeping": Job.objects.filter(housekeeping=True).count(),
    }
    rows = schedule_list()
    out["schedule"] = {
        "periodic_tasks": len(rows),
        "with_last_run": sum(r.last_run is not None for r in rows),
        "all": _timed(lambda: schedule_list(), runs),
        "housekeeping_hidden": _timed(lambda: schedule_list(housekeeping=False), runs),
    }
    hidden = housekeeping_hidden(TaskFilters(), shown=False)
    first = jobs_page(jobs_filter(hidden), limit=50)
    out["task_list_default"] = {
        "rows": len(first.rows),
        "housekeeping_rows": sum(j.housekeeping for j in first.rows),
        **_timed(lambda: jobs_page(jobs_filter(hidden), limit=50).rows, runs),
    }

    with transaction.atomic():
        processes = _catalog_of_ten()
        began = time.perf_counter()
        nodes, edges, counted = graph_nodes(now=timezone.now())
        nodes_ms = (time.perf_counter() - began) * 1000
        times, crossings = [], []
        for _ in range(LAYOUT_RUNS):
            began = time.perf_counter()
            where = layout(nodes, edges)
            times.append((time.perf_counter() - began) * 1000)
            crossings.append(edge_crossings(where))
        out["graph"] = {
            "processes": processes,
            "counted": counted,
            "boxes": len(where.placed),
            "edges": len(edges),
            "crossings": edge_crossings(where),
            "crossings_per_run": sorted(set(crossings)),
            "overlaps": len(boxes_overlap(where, gap=0)),
            "closer_than_min_gap": len(boxes_overlap(where, gap=MIN_GAP)),
            "graph_nodes_ms": nodes_ms,
            "layout_mean_ms": statistics.mean(times),
            "layout_max_ms": max(times),
            "layout_runs": LAYOUT_RUNS,
        }
        transaction.set_rollback(True)
    return out


# --- the run ---------------------------------------------------------------------------------------------------


def _filled(url: str) -> dict[str, int] | None:
    """The sizes the databases were filled to (None: never filled, or not completely)."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT payments, jobs FROM bench_front_door_filled").fetchone()
    except psycopg.Error:
        return None
    return {"payments": row[0], "jobs": row[1]} if row else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.front_door", description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=1_200_000, help="payments (default 1200000)")
    parser.add_argument("--jobs", type=int, default=300_000, help="jobs (default 300000)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each query (default 20)")
    parser.add_argument("--database", default="atrium_bench_front_door", help="the portal's database, kept")
    parser.add_argument("--refill", action="store_true", help="fill the databases anew even if they are filled")
    parser.add_argument("--quick", action="store_true", help="small sizes in their own database (a smoke run)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)

    infra = infra_start("bench")
    me = [sys.executable, "-m", "bench.front_door", "--child"]
    sizes = {"payments": args.payments, "jobs": args.jobs}
    names = {"portal": args.database, "payments": f"{args.database}_payments"}
    try:
        url = {k: database_url_with_name(infra.database_url, v) for k, v in names.items()}
        portal_env = _portal_env(url["portal"], infra.redis_url)
        payments_env = _payments_env(url["payments"], infra.redis_url)
        migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
        migrate_payments = [sys.executable, "services/payments/manage.py", "migrate", "--noinput", "-v", "0"]
        filled = _filled(url["portal"])
        if args.refill or filled != sizes:
            print(f"filling {names['portal']} and {names['payments']}: {args.payments:,} payments, {args.jobs:,} jobs…")
            for name in names.values():
                database_drop(infra.database_url, name)
                database_create(infra.database_url, name)
            run_checked(migrate, portal_env)
            run_checked(migrate_payments, payments_env)
            began = time.perf_counter()
            run_checked([*me, "fill-payments", json.dumps(sizes)], payments_env, timeout=1800)
            print(f"  {args.payments:,} payments in {time.perf_counter() - began:.0f} s", flush=True)
            began = time.perf_counter()
            run_checked([*me, "fill-jobs", json.dumps(sizes)], portal_env, timeout=1800)
            print(f"  {args.jobs:,} jobs in {time.perf_counter() - began:.0f} s", flush=True)
            with psycopg.connect(url["portal"], autocommit=True) as conn:
                conn.execute("CREATE TABLE bench_front_door_filled (payments bigint, jobs bigint)")
                conn.execute("INSERT INTO bench_front_door_filled VALUES (%s, %s)", [args.payments, args.jobs])
        else:
            print(f"{names['portal']} already holds {args.payments:,} payments and {args.jobs:,} jobs", flush=True)
            run_checked(migrate, portal_env)  # migrations added since the fill
            run_checked(migrate_payments, payments_env)
        spec = json.dumps({"runs": args.runs})
        pay = json.loads(run_checked([*me, "measure-payments", spec], payments_env).strip().splitlines()[-1])
        portal = json.loads(run_checked([*me, "measure-portal", spec], portal_env).strip().splitlines()[-1])

        print()
        print("Atrium front door benchmark", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(
            f"  postgresql {'embedded' if infra.embedded_postgres else 'external'}, {os.cpu_count()} cores; "
            f"{pay['payments']:,} payments over the 24 h before {pay['until'][:19]}, {portal['jobs']:,} jobs "
            f"({portal['housekeeping']:,} housekeeping); {args.runs} runs each (ms)"
        )
        print("payments stats: the service's selector against one raw GROUP BY (psycopg)")
        for window in ("1h", "24h"):
            w = pay[window]
            print(
                f"  {window:<4} {w['payments']:>9,} payments  service p50 {w['service']['p50']:7.1f} "
                f"p95 {w['service']['p95']:7.1f}  baseline p50 {w['baseline']['p50']:7.1f} "
                f"p95 {w['baseline']['p95']:7.1f}  service/baseline {w['ratio_p50']:.2f}x"
            )
        print(f"  same answer both ways: {'yes' if pay['agree'] else 'NO'}")
        s = portal["schedule"]
        print(f"schedule: {s['periodic_tasks']} periodic tasks, {s['with_last_run']} with a recorded run")
        for key in ("all", "housekeeping_hidden"):
            print(f"  schedule_list ({key:<19}) p50 {s[key]['p50']:7.1f}  p95 {s[key]['p95']:7.1f}")
        t = portal["task_list_default"]
        print(
            f"  task list default (housekeeping hidden, first page: {t['rows']} rows, {t['housekeeping_rows']} "
            f"housekeeping) p50 {t['p50']:7.1f}  p95 {t['p95']:7.1f}"
        )
        g = portal["graph"]
        print(
            f"catalog graph: {g['processes']} processes → {g['boxes']} boxes, {g['edges']} edges; layout mean "
            f"{g['layout_mean_ms']:.1f} ms (max {g['layout_max_ms']:.1f}) of {g['layout_runs']}; crossings "
            f"{g['crossings']} (over the runs: {', '.join(map(str, g['crossings_per_run']))}), overlaps "
            f"{g['overlaps']} ({g['closer_than_min_gap']} closer than the test's gap)"
        )
        print(json.dumps({"payments_stats": pay, **portal}, default=str))
        failed = not pay["agree"] or g["boxes"] != 10 or g["overlaps"] or t["housekeeping_rows"]
        return 1 if failed else 0
    finally:
        infra.stop()


if __name__ == "__main__":
    sys.exit(main())
