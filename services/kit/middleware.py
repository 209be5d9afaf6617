"""Middleware every Atrium process runs: request ids, metrics, body-size limit."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from services.kit.audit import current_request_var
from services.kit.context import REQUEST_ID_HEADER, request_id_clean, request_id_new, request_id_var
from services.kit.errors import problem_response
from services.kit.logs import get_logger
from services.kit.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = get_logger("atrium.http")


class RequestIdMiddleware:
    """Accept a well-formed ``X-Request-ID`` or make one; expose it to logs, tasks and outgoing calls."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_clean(request.headers.get(REQUEST_ID_HEADER)) or request_id_new()
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        request_token = current_request_var.set(request)  # audit events read actor, IP and user agent from it
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            return response
        finally:
            current_request_var.reset(request_token)
            request_id_var.reset(token)


class MetricsMiddleware:
    """Count requests and time them by view name, method and status; log one line per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.service = settings.ATRIUM_SERVICE

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or match.route) if match else "unmatched"
        HTTP_REQUESTS.labels(self.service, request.method, view, str(response.status_code)).inc()
        HTTP_LATENCY.labels(self.service, request.method, view).observe(elapsed)
        if not request.path.startswith(("/health/", "/metrics", "/static/")):
            log.info(
                "http.request",
                method=request.method,
                path=request.path,
                view=view,
                status=response.status_code,
                duration_ms=round(elapsed * 1000, 2),
            )
        return response


class BodySizeLimitMiddleware:
    """Refuse bodies over ``ATRIUM_MAX_BODY_BYTES`` with 413 before anything reads them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.limit = settings.ATRIUM_MAX_BODY_BYTES

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            size = int(length)
        except ValueError:
            return problem_response(
                request, status_code=400, code="bad_request", title="Bad request", detail="Invalid Content-Length."
            )
        if size > self.limit:
            return problem_response(
                request,
                status_code=413,
                code="payload_too_large",
                title="Request body too large",
                detail=f"The body is {size} bytes; the limit is {self.limit}.",
            )
        return self.get_response(request)
