"""Gunicorn workers whose own error answers are problem details, like every other Atrium error.

Gunicorn answers some requests itself, before any application code runs: a request line or header it cannot
parse (400), a header section over its limits (431: a 64 KB ``Authorization`` header), a request line over
its limit (414), a transfer coding it does not implement (501), a malformed chunked body. Its stock answer is
an HTML page; these workers answer ``application/problem+json`` with a stable ``code`` and a fresh request id
(also in ``X-Request-ID``), as the kit's handlers do for everything past gunicorn.

``gunicorn.conf.py`` sets ``worker_class = "services.kit.webserver.ProblemWorker"``, which becomes the threaded
worker when ``threads`` > 1 (what gunicorn itself picks for its default worker) and the sync worker otherwise.
This module imports gunicorn and the kit's context only (no Django, no app): gunicorn's master loads it.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from services.kit.context import REQUEST_ID_HEADER, request_id_new

PROBLEM_CONTENT_TYPE = "application/problem+json"

# (status, code, title) for what gunicorn refuses itself; the first matching class wins (subclasses first).
_REFUSALS: list[tuple[type[BaseException], int, str, str]] = [
    # A header the application tried to send: the application's fault, a 500 like any other bug.
    (http_errors.InvalidResponseHeader, 500, "internal_error", "Internal server error"),
    (http_errors.InvalidResponseHeaderName, 500, "internal_error", "Internal server error"),
    (http_errors.LimitRequestHeaders, 431, "header_too_large", "Request header fields too large"),
    (http_errors.LimitRequestLine, 414, "uri_too_long", "Request line too long"),
    (http_errors.UnsupportedTransferCoding, 501, "unsupported_transfer_coding", "Transfer coding not implemented"),
    (http_errors.ExpectationFailed, 417, "expectation_failed", "Expectation failed"),
    (http_errors.ForbiddenProxyRequest, 403, "permission_denied", "Permission denied"),
    (http_errors.ConfigurationProblem, 500, "internal_error", "Internal server error"),
    # Everything else gunicorn cannot parse: request line, method, version, headers, chunked framing, proxy
    # protocol, scheme headers, obsolete line folding.
    (http_errors.ParseException, 400, "bad_request", "Bad request"),
    (http_errors.NoMoreData, 400, "bad_request", "Bad request"),
]
_DETAILS = {
    "header_too_large": "The request's header fields are larger or more numerous than this server accepts.",
    "uri_too_long": "The request line is longer than this server accepts.",
    "internal_error": "The server failed to handle this request; quote the request_id when reporting it.",
}
_DETAIL_MAX = 200


def _describe(exc: BaseException) -> tuple[int, str, str, str]:
    """``(status, code, title, detail)`` of the answer to ``exc``."""
    status, code, title = next(
        ((s, c, t) for kind, s, c, t in _REFUSALS if isinstance(exc, kind)),
        (500, "internal_error", "Internal server error"),
    )
    detail = _DETAILS.get(code) or f"Malformed request: {type(exc).__name__}: {exc}"[:_DETAIL_MAX]
    return status, code, title, detail


def problem_answer(status: int, code: str, title: str, detail: str, *, path: str | None = None) -> bytes:
    """A complete HTTP/1.1 response carrying a problem document (the shape of ``services.kit.errors``)."""
    request_id = request_id_new()
    body: dict[str, Any] = {
        "type": f"urn:atrium:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if path:
        body["instance"] = path
    body["request_id"] = request_id
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"{REQUEST_ID_HEADER}: {request_id}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + payload


class ProblemErrorsMixin:
    """Replaces gunicorn's HTML error writer (``Worker.handle_error``) with a problem document."""

    log: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, code, title, detail = _describe(exc)
        address = (addr or ("", -1))[0]
        if status >= 500:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        else:
            self.log.warning("Invalid request from ip=%s: %s (%s)", address, code, type(exc).__name__)
        path = getattr(req, "path", None) if req is not None else None
        try:
            util.write_nonblock(client, problem_answer(status, code, title, detail, path=path or None))
        except Exception:  # the client may be gone already; nothing left to tell it
            self.log.debug("Failed to send error message.")


class ProblemThreadWorker(ProblemErrorsMixin, ThreadWorker):
    """gunicorn's threaded worker (``gthread``), answering its own errors as problem details."""


class ProblemSyncWorker(ProblemErrorsMixin, SyncWorker):
    """gunicorn's sync worker, answering its own errors as problem details."""


class ProblemWorker:
    """The worker class for ``gunicorn.conf.py``: gthread when ``threads`` > 1, else sync, as gunicorn chooses
    for its default worker (decided per worker from the final configuration, command line included)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        cfg = kwargs["cfg"] if "cfg" in kwargs else args[5]
        chosen = ProblemThreadWorker if cfg.threads > 1 else ProblemSyncWorker
        return chosen(*args, **kwargs)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        chosen = ProblemThreadWorker if cfg.threads > 1 else ProblemSyncWorker
        check = getattr(chosen, "check_config", None)
        if check is not None:
            check(cfg, log)
