"""Job dashboard: what tracking costs Celery, and how fast the task list is over a million recorded jobs.

Run from the repository root::

    .venv/bin/python -m bench.jobs [--tasks 5000] [--rounds 3] [--list-jobs 1000000] [--requests 100]

PostgreSQL and Redis are external when ``DATABASE_URL``/``REDIS_URL`` are set, otherwise embedded. Two fresh
portal databases are created, migrated and dropped at the end.

* **tracking cost**: a Celery worker (``-Q portal``, prefork, ``--concurrency`` processes, the portal's settings)
  runs ``--tasks`` ``portal.noop`` tasks (no work, no stored result) that this process publishes as fast as it
  can; measured from the first publish until the worker's own count (``inspect stats``) reaches them all.
  *Bare*: ``JOBS_TRACKING=false`` in the publisher and the worker — Celery with Atrium's configuration and
  nothing recording. *Tracked*: tracking on, and the job monitor running at the same time on the same cores,
  recording every event. Rounds alternate bare and tracked (a fresh worker each); reported: each round's
  tasks/s, the medians, tracking's cost (1 - tracked/bare), and how long after the last task the monitor had
  recorded every one.
* **list latency**: ``--list-jobs`` rows in ``jobs_job`` generated in SQL (``generate_series``: 4 services'
  queues, 12 task names, 2 % failed, request ids, 30 days of history), vacuumed and analysed; then through
  Django's full request handler (every middleware, session authentication as a viewer, the view, the query):
  ``GET /api/v1/jobs/tasks`` and the list page ``/admin/jobs/tasks/`` with each filter, ``--requests`` times
  each: p50/p95 (the second page too, through the cursor).

Targets on the 2-core machine: tracking costs ≤ 15 %; list API and page p95 < 300 ms with a filter.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.audit import run_checked
from devtools.infra import REPO_ROOT, database_create, database_drop, database_url_with_name, infra_start, venv_env
from devtools.processes import process_group_stop

TARGET_COST = 0.15
TARGET_P95_MS = 300.0
LOG_DIR = REPO_ROOT / "var" / "bench-jobs"


def _env(database_url: str, redis_url: str, stream: str, **extra: str) -> dict[str, str]:
    env = venv_env(dict(os.environ))
    for name in ("DATABASE_URL", "PORTAL_DATABASE_URL", "LEDGER_DATABASE_URL", "PAYMENTS_DATABASE_URL"):
        env.pop(name, None)
    env.update(
        {
            "ATRIUM_ENV": "test",
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "PORTAL_DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ATRIUM_OUTBOX_RELAY": "off",
            "ATRIUM_VAR_DIR": str(LOG_DIR),
            "JOBS_STREAM": stream,
            "LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


def _start(args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / log_name).open("wb") as log:
        return subprocess.Popen(  # noqa: S603
            args, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


# --- inside Django (python -m bench.jobs --child ROLE ARG) -----------------------------------------------------


def _child(role: str, arg: str) -> None:
    import django

    django.setup()
    if role == "publish":
        print(json.dumps(_publish(json.loads(arg))))
    elif role == "generate":
        _generate(int(arg))
    elif role == "list":
        print(json.dumps(_list_latency(int(arg))))
    elif role == "recorded":
        from portal.jobs.models import Job

        print(json.dumps({"count": Job.objects.filter(name="portal.noop", state="succeeded").count()}))


def _publish(spec: dict[str, Any]) -> dict[str, Any]:
    """Publish ``tasks`` noop tasks, then wait until ``node`` has run them all; the seconds that took."""
    from services.kit.tracking import tracker
    from workers.celery import app

    node, count = spec["node"], int(spec["tasks"])
    inspect = app.control.inspect([node], timeout=2)

    def done() -> int:
        stats = inspect.stats() or {}
        return int(stats.get(node, {}).get("total", {}).get("portal.noop", 0))

    before = done()
    began = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("portal.noop", producer=producer)
    published = time.perf_counter() - began
    tracker.close(timeout=30)
    while done() < before + count:
        time.sleep(0.05)
    return {"seconds": time.perf_counter() - began, "published_seconds": published}


def _generate(count: int) -> None:
    """``count`` jobs in SQL, in chunks, spread over the last 30 days (newest last)."""
    from django.db import connection

    names = [
        "ledger.expire_pending",
        "ledger.integrity_check",
        "ledger.outbox_relay",
        "ledger.probe",
        "payments.drain",
        "payments.sweep",
        "payments.reconcile",
        "payments.domain_event",
        "audit.ingest",
        "audit.sign_head",
        "portal.catalog_health",
        "portal.outbox_relay",
    ]
    with connection.cursor() as cursor:
        chunk = 250_000
        for start in range(0, count, chunk):
            cursor.execute(
                """
                INSERT INTO jobs_job (task_id, name, service, queue, state, worker, args, kwargs, request_id,
                    parent_id, root_id, retry_of, retries, seen_at, queued_at, received_at, started_at, finished_at,
                    last_event_at, runtime_ms, result, exception_type, exception_message, traceback,
                    carried_requests, carried_objects)
                SELECT md5(g::text || 'task')::uuid::text, n.name, split_part(n.name, '.', 1),
                    split_part(n.name, '.', 1),
                    CASE WHEN g %% 50 = 0 THEN 'failed' WHEN g %% 97 = 0 THEN 'retried' ELSE 'succeeded' END,
                    split_part(n.name, '.', 1) || '@host-' || (g %% 3), '[]'::jsonb, '{}'::jsonb,
                    'req_' || (g / 3), '', '', '', (g %% 97 = 0)::int,
                    t, t, t + interval '2 ms', t + interval '3 ms', t + interval '40 ms', t + interval '40 ms',
                    37.5, '', CASE WHEN g %% 50 = 0 THEN 'UpstreamUnavailable' ELSE '' END,
                    CASE WHEN g %% 50 = 0 THEN 'the ledger did not answer' ELSE '' END,
                    CASE WHEN g %% 50 = 0 THEN 'Traceback (most recent call last): ...' ELSE '' END, 0, 0
                FROM generate_series(%s, %s) AS g
                CROSS JOIN LATERAL (SELECT (%s::text[])[1 + g %% 12] AS name) AS n
                CROSS JOIN LATERAL (
                    SELECT now() - interval '30 days' + (g * (interval '30 days' / %s)) AS t
                ) AS times
                """,
                [start + 1, min(count, start + chunk), names, count],
            )
        cursor.execute("VACUUM (ANALYZE) jobs_job")
    print(json.dumps({"generated": count}))


def _list_latency(requests: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from portal.identity.roles import roles_sync

    roles_sync()
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user("bench-viewer", "v@example.com", "bench-password-123", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400 * 3))
    filters = {
        "newest page": {},
        "state=failed": {"state": "failed"},
        "queue=ledger": {"queue": "ledger"},
        "name=payments.drain": {"name": "payments.drain"},
        "failed in payments": {"state": "failed", "queue": "payments"},
        "request id": {"request_id": "req_123456"},
        "one day": {"since": f"{day}T00:00:00Z", "until": f"{day}T23:59:59Z"},
        "task id prefix": {"q": "8f"},
    }
    out: dict[str, Any] = {}
    for kind, path in (("api", "/api/v1/jobs/tasks"), ("page", "/admin/jobs/tasks/")):
        for name, params in filters.items():
            times: list[float] = []
            status = None
            for _ in range(requests):
                began = time.perf_counter()
                response = client.get(path, params)
                times.append((time.perf_counter() - began) * 1000)
                status = response.status_code
            times.sort()
            out[f"{kind}: {name}"] = {
                "status": status,
                "p50": statistics.median(times),
                "p95": times[max(0, int(len(times) * 0.95) - 1)],
            }
        # the second page of a filter, through the cursor the first gave
        first = client.get("/api/v1/jobs/tasks", {"state": "failed"}).json() if kind == "api" else None
        if first and first.get("next"):
            times = []
            for _ in range(requests):
                began = time.perf_counter()
                response = client.get(first["next"])
                times.append((time.perf_counter() - began) * 1000)
            times.sort()
            out["api: state=failed, page 2"] = {
                "status": response.status_code,
                "p50": statistics.median(times),
                "p95": times[max(0, int(len(times) * 0.95) - 1)],
            }
    return out


# --- the run ---------------------------------------------------------------------------------------------------


def _worker(env: dict[str, str], node: str, concurrency: int) -> subprocess.Popen[bytes]:
    celery = str(Path(sys.executable).parent / "celery")
    args = [celery, "-A", "workers", "worker", "-Q", "portal", "-c", str(concurrency), "-n", node]
    return _start([*args, "--without-mingle", "--without-gossip", "-l", "WARNING"], env, f"{node.split('@')[0]}.log")


def _wait_worker(env: dict[str, str], node: str) -> None:
    code = (
        "import django, sys; django.setup()\n"
        "from workers.celery import app\n"
        f"sys.exit(0 if (app.control.inspect([{node!r}], timeout=1).ping() or {{}}) else 1)\n"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, check=False).returncode == 0:  # noqa: S603
            return
        time.sleep(0.5)
    raise RuntimeError(f"worker {node} did not answer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="noop tasks per round (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of bare and tracked (default 3)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--list-jobs", type=int, default=1_000_000, help="rows for the list latency run")
    parser.add_argument("--requests", type=int, default=100, help="requests per filter (default 100)")
    parser.add_argument(
        "--without-monitor", action="store_true", help="tracked rounds without the monitor (the workers' cost alone)"
    )
    parser.add_argument("--skip-list", action="store_true", help="leave out the list latency run")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0

    run = uuid.uuid4().hex[:8]
    names = {k: f"atrium_bench_jobs_{run}_{k}" for k in ("track", "list")}
    stream = f"atrium:jobs:bench-{run}"
    infra = infra_start("bench")
    created: list[str] = []
    processes: list[subprocess.Popen[bytes]] = []
    me = [sys.executable, "-m", "bench.jobs", "--child"]
    failed = False
    try:
        for name in names.values():
            database_create(infra.database_url, name)
            created.append(name)
        url = {k: database_url_with_name(infra.database_url, v) for k, v in names.items()}
        env = _env(url["track"], infra.redis_url, stream)
        print("migrating…", flush=True)
        for key in names:
            run_checked(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                {**env, "PORTAL_DATABASE_URL": url[key]},
            )

        # 1. tracking cost
        rounds: dict[str, list[float]] = {"bare": [], "tracked": []}
        recorded_after: list[float] = []
        for n in range(args.rounds):
            for mode in ("bare", "tracked"):
                tracking = "true" if mode == "tracked" else "false"
                mode_env = {**env, "JOBS_TRACKING": tracking}
                node = f"bench-{mode}-{n}-{run}@%h".replace("%h", os.uname().nodename)
                worker = _worker(mode_env, node, args.concurrency)
                processes.append(worker)
                monitor = None
                try:
                    _wait_worker(mode_env, node)
                    if mode == "tracked" and not args.without_monitor:
                        monitor = _start(
                            [sys.executable, "manage.py", "jobs_monitor", "--consumer", f"bench-{run}"],
                            mode_env,
                            f"monitor-{n}.log",
                        )
                        processes.append(monitor)
                        time.sleep(2)  # its start-up is not part of the measurement
                    spec = json.dumps({"node": node, "tasks": args.tasks})
                    result = json.loads(run_checked([*me, "publish", spec], mode_env).strip().splitlines()[-1])
                    rate = args.tasks / result["seconds"]
                    rounds[mode].append(rate)
                    line = f"  round {n + 1} {mode:<8} {rate:8,.0f} tasks/s ({result['seconds']:.2f} s)"
                    if monitor is not None:
                        began = time.perf_counter()
                        expected = args.tasks * (n + 1)
                        deadline = time.monotonic() + 300
                        count = 0
                        while time.monotonic() < deadline:
                            count = json.loads(run_checked([*me, "recorded", "-"], mode_env))["count"]
                            if count >= expected:
                                break
                            time.sleep(0.2)
                        recorded_after.append(time.perf_counter() - began)
                        failed |= count < expected
                        line += f"; recorded by the monitor {recorded_after[-1]:.1f} s after the last ({count})"
                    print(line, flush=True)
                finally:
                    for process in (monitor, worker):
                        if process is not None:
                            process_group_stop(process, 20)
        bare, tracked = statistics.median(rounds["bare"]), statistics.median(rounds["tracked"])
        cost = 1 - tracked / bare

        # 2. list latency over a million jobs
        latency: dict[str, Any] = {}
        if not args.skip_list:
            list_env = {**env, "PORTAL_DATABASE_URL": url["list"]}
            print(f"list: generating {args.list_jobs:,} jobs…", flush=True)
            began = time.perf_counter()
            run_checked([*me, "generate", str(args.list_jobs)], list_env, timeout=7200)
            print(f"  generated in {time.perf_counter() - began:.0f} s; measuring…", flush=True)
            latency = json.loads(run_checked([*me, "list", str(args.requests)], list_env).strip().splitlines()[-1])

        print()
        print("Atrium job dashboard benchmark", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(
            f"  postgresql {'embedded' if infra.embedded_postgres else 'external'}, redis "
            f"{'embedded' if infra.embedded_redis else 'external'}, {os.cpu_count()} cores, "
            f"worker concurrency {args.concurrency}"
        )
        print(
            f"tracking: bare {bare:,.0f} tasks/s, tracked {tracked:,.0f} tasks/s (medians of "
            f"{', '.join(f'{r:,.0f}' for r in rounds['bare'])} / {', '.join(f'{r:,.0f}' for r in rounds['tracked'])}); "
            f"cost {cost:.1%} (target ≤ {TARGET_COST:.0%}: {'MET' if cost <= TARGET_COST else 'MISSED'}); "
            + (
                "the monitor not running"
                if args.without_monitor
                else f"the monitor recording at the same time, every task recorded ≤ {max(recorded_after):.1f} s "
                "after the last one ran"
            )
        )
        if args.skip_list:
            return 1 if failed else 0
        print(f"list over {args.list_jobs:,} jobs, {args.requests} requests per filter (ms):")
        worst = 0.0
        for name, figures in latency.items():
            worst = max(worst, figures["p95"])
            print(f"  {name:<32} status {figures['status']}  p50 {figures['p50']:7.1f}  p95 {figures['p95']:7.1f}")
            failed |= figures["status"] != 200
        print(
            f"worst p95 {worst:.1f} ms (target < {TARGET_P95_MS:.0f}: {'MET' if worst < TARGET_P95_MS else 'MISSED'})"
        )
        return 1 if failed else 0
    finally:
        for process in processes:
            process_group_stop(process, 10)
        for name in created:
            database_drop(infra.database_url, name)
        try:
            import redis

            redis.Redis.from_url(infra.redis_url).delete(stream)
        except Exception as exc:
            print(f"could not delete the stream {stream}: {exc}")
        infra.stop()


if __name__ == "__main__":
    sys.exit(main())
