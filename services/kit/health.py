"""Liveness and readiness endpoints (``application/health+json``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache

from services.kit.errors import problem_response

HEALTH_CONTENT_TYPE = "application/health+json"


def check_database() -> dict[str, Any]:
    """Run ``SELECT 1`` on the default database."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {}


def check_broker() -> dict[str, Any]:
    """Ping the Celery broker (Redis PING, or an AMQP connection)."""
    url = settings.CELERY_BROKER_URL
    if not url:
        raise RuntimeError("no broker configured")
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    else:
        from kombu import Connection

        with Connection(url, connect_timeout=1) as conn:
            conn.ensure_connection(max_retries=1)
    return {}


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {"database": check_database, "broker": check_broker}


def _run(name: str, check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        details = check()
        result: dict[str, Any] = {"status": "pass", **details}
    except Exception as exc:  # a readiness probe reports failures, it never raises
        result = {"status": "fail", "output": f"{type(exc).__name__}: {exc}"[:500]}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def _respond(body: dict[str, Any], status: int) -> HttpResponse:
    return HttpResponse(json.dumps(body), status=status, content_type=HEALTH_CONTENT_TYPE)


def require_get(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """GET/HEAD only; anything else is a 405 problem document, like every other route."""

    def wrapped(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            response = problem_response(request, status_code=405, code="method_not_allowed", title="Method not allowed")
            response["Allow"] = "GET, HEAD"
            return response
        return view(request)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


@never_cache
@require_get
def live(request: HttpRequest) -> HttpResponse:
    """The process is up and serving requests."""
    return _respond({"status": "pass", "service": settings.ATRIUM_SERVICE}, 200)


@never_cache
@require_get
def ready(request: HttpRequest) -> HttpResponse:
    """The process can do its work: database and broker answer. 503 with details otherwise."""
    checks = {name: _run(name, check) for name, check in CHECKS.items()}
    ok = all(c["status"] == "pass" for c in checks.values())
    body = {"status": "pass" if ok else "fail", "service": settings.ATRIUM_SERVICE, "checks": checks}
    return _respond(body, 200 if ok else 503)
