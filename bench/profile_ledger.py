"""Where a ledger request spends its time: cProfile and SQL counts, in-process, with production settings.

    .venv/bin/python -m bench.profile_ledger [--requests 300] [--batch 100] [--top 30]

The same PostgreSQL/Redis choice as ``bench.ledger`` (external when ``DATABASE_URL``/``REDIS_URL`` are set).
Requests go through Django's full handler (every middleware, JWT verification against a JWKS server in
this process, DRF, the services) via ``django.test.Client``; the database is real and freshly migrated.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import secrets
import sys
import time
import uuid
from typing import Any

from bench.ledger import ACCOUNTS, CURRENCY, FUNDING, Jwks, migrate, transfer_body, workload
from devtools.infra import database_create, database_drop, database_url_with_name, infra_start


def _client(token: str) -> Any:
    from django.test import Client

    return Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")


def _accounts(client: Any) -> list[str]:
    ids = []
    for index in range(ACCOUNTS + 1):
        body = {"name": f"p{index}", "currency": CURRENCY, "normal_balance": "credit", "allow_negative": index == 0}
        response = client.post("/api/v1/accounts", body, content_type="application/json")
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])
    funding = [transfer_body(ids, (0, i + 1, FUNDING), f"fund-{i}") for i in range(ACCOUNTS)]
    response = client.post("/api/v1/transactions/batch", {"transactions": funding}, content_type="application/json")
    assert response.status_code == 200, response.content
    return ids[1:]


def _send(client: Any, accounts: list[str], transfers: list[Any], batch: int, tag: str) -> None:
    for start in range(0, len(transfers), batch):
        unit = transfers[start : start + batch]
        bodies = [transfer_body(accounts, t, f"{tag}-{start + i}") for i, t in enumerate(unit)]
        if batch == 1:
            response = client.post("/api/v1/transactions", bodies[0], content_type="application/json")
            assert response.status_code == 201, response.content
        else:
            response = client.post(
                "/api/v1/transactions/batch", {"transactions": bodies}, content_type="application/json"
            )
            assert response.status_code == 200, response.content


def _queries(client: Any, accounts: list[str], batch: int, tag: str) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        _send(client, accounts, workload(batch, 99), batch, tag)
    return [q["sql"][:160] for q in captured.captured_queries]


def _by_package(profiler: cProfile.Profile) -> list[tuple[str, float]]:
    """Own (not cumulative) profiled time summed by top-level package: where CPU actually goes."""
    totals: dict[str, float] = {}
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        if "site-packages/" in filename:
            package = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/work/main/" in filename:
            package = "/".join(filename.split("/work/main/", 1)[1].split("/")[:2])
        elif filename == "~":
            package = f"builtin {function}"[:40]
        else:
            package = "stdlib " + filename.rsplit("/", 1)[-1]
        totals[package] = totals.get(package, 0.0) + tottime
    return sorted(totals.items(), key=lambda kv: -kv[1])[:25]


def floor(client: Any, count: int = 300) -> None:
    """CPU per request of the cheapest routes: what the framework costs before the ledger does anything."""
    print("===== floor (no ledger work)")
    for label, path in (
        ("GET /health/live (middleware only)", "/health/live"),
        ("GET /api/v1/whoami (+JWT, DRF)", "/api/v1/whoami"),
    ):
        for _ in range(20):
            assert client.get(path).status_code == 200
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(count):
            client.get(path)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        print(f"    {label:<40} {wall / count * 1000:6.2f} ms wall, {cpu / count * 1000:6.2f} ms CPU per request")


def profile(label: str, client: Any, accounts: list[str], count: int, batch: int, top: int) -> None:
    """Print wall time per request, the SQL one request runs, and the profile's top functions."""
    run = uuid.uuid4().hex[:6]
    _send(client, accounts, workload(max(batch, 50), 7), batch, f"warm-{run}")
    queries = _queries(client, accounts, batch, f"q-{run}")
    transfers = workload(count * batch, 11)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    _send(client, accounts, transfers, batch, f"t-{run}")
    wall1, cpu1 = time.perf_counter() - wall0, time.process_time() - cpu0
    print(
        f"\n===== {label}: without the profiler {wall1 / count * 1000:.2f} ms wall, "
        f"{cpu1 / count * 1000:.2f} ms CPU per request (this process: handler + Django test client)"
    )
    profiler = cProfile.Profile(time.process_time)  # CPU time: a busy machine must not inflate syscalls
    began = time.perf_counter()
    profiler.enable()
    _send(client, accounts, transfers, batch, f"p-{run}")
    profiler.disable()
    wall = time.perf_counter() - began
    print(f"{label}: {count} requests, {wall / count * 1000:.2f} ms per request with the profiler on")
    print(f"SQL per request ({len(queries)}; health check and BEGIN/COMMIT are not captured):")
    for sql in queries:
        print("   ", sql)
    print("--- own time by package (share of the profiled total)")
    for package, seconds in _by_package(profiler):
        print(f"    {package:<28} {seconds / count * 1000:8.2f} ms per request")
    for sort, restrict in (("tottime", ()), ("tottime", ("site-packages/django/",)), ("cumulative", ())):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(*restrict, top)
        print(f"--- by {sort}")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:12000])


def main(argv: list[str] | None = None) -> int:
    """Set up a database and the ledger's production settings in this process, then profile both endpoints."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="single requests to profile (batch: a tenth)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    infra = infra_start("bench")
    name = f"atrium_bench_{uuid.uuid4().hex[:8]}_profile"
    jwks = Jwks()
    try:
        database_create(infra.database_url, name)
        url = database_url_with_name(infra.database_url, name)
        migrate(url, infra.redis_url)
        for key in ("DATABASE_URL", "DEBUG"):
            os.environ.pop(key, None)
        os.environ.update(
            ATRIUM_ENV="production",
            DJANGO_SETTINGS_MODULE="services.ledger.settings",
            SECRET_KEY=secrets.token_urlsafe(48),
            ALLOWED_HOSTS="127.0.0.1",
            SECURE_SSL_REDIRECT="false",
            LEDGER_DATABASE_URL=url,
            REDIS_URL=infra.redis_url,
            JWT_JWKS_URL=jwks.url,
            LOG_LEVEL=os.environ.get("LOG_LEVEL", "INFO"),
        )
        import django

        django.setup()
        import logging

        # Log lines go to a sink, as under gunicorn (to a file), not to this terminal.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(open(os.devnull, "w"))
        client = _client(jwks.mint())
        accounts = _accounts(client)
        floor(client)
        profile("API single", client, accounts, args.requests, 1, args.top)
        profile("API batch", client, accounts, max(3, args.requests // 10), args.batch, args.top)
        from django.db import connections

        connections.close_all()
    finally:
        jwks.stop()
        try:
            database_drop(infra.database_url, name)
        finally:
            infra.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
