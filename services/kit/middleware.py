"""Middleware every Atrium process runs: request ids, metrics, body-size limits (chunked bodies included)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
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
            # Views that machines call every few seconds (catalog heartbeats) say so: their successes are DEBUG.
            view_class = getattr(getattr(match, "func", None), "view_class", None)
            quiet = response.status_code < 400 and getattr(view_class, "access_log_quiet", False)
            log.log(
                logging.DEBUG if quiet else logging.INFO,
                "http.request",
                method=request.method,
                path=request.path,
                view=view,
                status=response.status_code,
                duration_ms=round(elapsed * 1000, 2),
            )
        return response


class BodySizeLimitMiddleware:
    """Bound every request body by its route's limit (413 ``payload_too_large``), chunked bodies included.

    The limit is ``ATRIUM_MAX_BODY_BYTES``, or the setting a view class names in ``max_body_setting`` (the
    ledger's batch endpoint: ``LEDGER_MAX_BATCH_BODY_BYTES``). It is checked in ``process_view``: after URL
    resolution, before anything reads the body (CSRF's ``process_view``, DRF's parsers, the view).

    A body with a Content-Length over the limit is refused unread. A chunked body (``Transfer-Encoding:
    chunked``, no Content-Length) is read here as it streams, and refused as soon as it passes the limit, so
    no more than the limit is ever held: Django itself sizes its body stream by Content-Length alone and would
    read such a body as empty (a POST silently losing its body).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponse | None:
        limit = body_limit(view_func)
        length = request.META.get("CONTENT_LENGTH")
        if length:
            try:
                size = int(length)
                if size < 0:
                    raise ValueError(length)
            except ValueError:
                return problem_response(
                    request, status_code=400, code="bad_request", title="Bad request", detail="Invalid Content-Length."
                )
            if size > limit:
                return _too_large(request, limit, f"The body is {size} bytes; the limit is {limit}.")
            return None
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            return _read_streamed_body(request, limit)
        return None


def body_limit(view_func: Callable[..., Any]) -> int:
    """The body limit of the view ``view_func`` (a view class's ``max_body_setting``, else the service's)."""
    view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
    name = getattr(view_class, "max_body_setting", None)
    return int(getattr(settings, name) if name else settings.ATRIUM_MAX_BODY_BYTES)


_READ_SIZE = 64 * 1024


def _too_large(request: HttpRequest, limit: int, detail: str) -> HttpResponse:
    return problem_response(
        request,
        status_code=413,
        code="payload_too_large",
        title="Request body too large",
        detail=detail,
        max_body_bytes=limit,
    )


def _read_streamed_body(request: HttpRequest, limit: int) -> HttpResponse | None:
    """Read a body without Content-Length, up to ``limit`` + 1 bytes, and give it to Django as if it had one."""
    environ = request.environ
    if not environ.get("wsgi.input_terminated"):
        # Without the server's word that the input ends with the body (gunicorn gives it), reading to its end
        # could wait for the client's next request: ask for a length rather than guess.
        return problem_response(
            request,
            status_code=411,
            code="length_required",
            title="Length required",
            detail="This server needs a Content-Length for a request body.",
        )
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = stream.read(min(_READ_SIZE, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                detail = f"The body passed the limit of {limit} bytes while it was being received."
                return _too_large(request, limit, detail)
    except Exception as exc:  # whatever the server raises reading it: a malformed chunk, a client gone
        log.info("http.body_unreadable", error=type(exc).__name__)
        return problem_response(
            request,
            status_code=400,
            code="bad_request",
            title="Bad request",
            detail="The chunked request body could not be read.",
        )
    body = b"".join(chunks)
    # Django reads a request's body through _stream, sized by CONTENT_LENGTH (0 when absent).
    request._stream = LimitedStream(io.BytesIO(body), len(body))  # type: ignore[attr-defined]
    request.META["CONTENT_LENGTH"] = str(len(body))
    return None
