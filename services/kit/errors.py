"""RFC 9457 problem details: one error shape, with a stable ``code``, for every process.

Services raise :class:`DomainError` subclasses; DRF exceptions, Django's 404/500
and low-level request failures are all turned into the same
``application/problem+json`` body::

    {"type": "urn:atrium:problem:insufficient_funds", "title": "Insufficient funds",
     "status": 409, "detail": "...", "code": "insufficient_funds",
     "instance": "/api/v1/...", "request_id": "req_...", "errors": [...]}
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from services.kit.context import request_id_var
from services.kit.logs import get_logger

log = get_logger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"


class DomainError(Exception):
    """A business-rule failure with a stable machine-readable code and an HTTP status."""

    code: str = "domain_error"
    status: int = status.HTTP_400_BAD_REQUEST
    title: str = "Request refused"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        extra: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.detail = detail or self.title
        if code:
            self.code = code
        self.extra = extra or {}
        self.headers = headers or {}
        super().__init__(self.detail)


class NotFound(DomainError):
    code = "not_found"
    status = status.HTTP_404_NOT_FOUND
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    status = status.HTTP_409_CONFLICT
    title = "Conflict"


def problem_body(
    *,
    status_code: int,
    code: str,
    title: str,
    detail: str | None = None,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build a problem-details dict."""
    body: dict[str, Any] = {
        "type": f"urn:atrium:problem:{code}",
        "title": title,
        "status": status_code,
        "detail": detail or title,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def problem_response(
    request: HttpRequest | None, *, status_code: int, code: str, title: str, **kw: Any
) -> HttpResponse:
    """A plain Django response carrying problem details (for non-DRF code paths)."""
    body = problem_body(
        status_code=status_code, code=code, title=title, instance=request.path if request else None, **kw
    )
    return HttpResponse(json.dumps(body), status=status_code, content_type=PROBLEM_CONTENT_TYPE)


def _field_errors(detail: Any, path: str = "") -> list[dict[str, Any]]:
    """Flatten DRF's nested ValidationError detail into ``[{field, pointer, code, detail}]``."""
    out: list[dict[str, Any]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            sub = key if not path else f"{path}.{key}"
            if key == "non_field_errors" and not path:
                sub = ""
            out.extend(_field_errors(value, sub))
    elif isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail) for item in detail):
            for item in detail:
                out.append(_one_error(path, item))
        else:
            for index, item in enumerate(detail):
                out.extend(_field_errors(item, f"{path}[{index}]" if path else f"[{index}]"))
    elif isinstance(detail, exceptions.ErrorDetail):
        out.append(_one_error(path, detail))
    else:
        out.append({"field": path or None, "pointer": _pointer(path), "code": "invalid", "detail": str(detail)})
    return out


def _pointer(path: str) -> str:
    if not path:
        return "#/"
    return "#/" + path.replace("[", ".").replace("]", "").replace(".", "/")


def _one_error(path: str, item: exceptions.ErrorDetail) -> dict[str, Any]:
    return {"field": path or None, "pointer": _pointer(path), "code": item.code or "invalid", "detail": str(item)}


_DRF_CODES: dict[type, tuple[str, str]] = {
    exceptions.NotAuthenticated: ("not_authenticated", "Authentication required"),
    exceptions.AuthenticationFailed: ("authentication_failed", "Authentication failed"),
    exceptions.PermissionDenied: ("permission_denied", "Permission denied"),
    exceptions.NotFound: ("not_found", "Not found"),
    exceptions.MethodNotAllowed: ("method_not_allowed", "Method not allowed"),
    exceptions.NotAcceptable: ("not_acceptable", "Not acceptable"),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", "Unsupported media type"),
    exceptions.Throttled: ("throttled", "Too many requests"),
    exceptions.ParseError: ("malformed_request", "Malformed request body"),
}


def _drf_problem(exc: exceptions.APIException, instance: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        return problem_body(
            status_code=exc.status_code,
            code="validation_error",
            title="Validation failed",
            detail="; ".join(f"{e['field']}: {e['detail']}" if e["field"] else e["detail"] for e in errors),
            instance=instance,
            errors=errors,
        ), headers
    code, title, generic = "error", "Request failed", "error"
    for cls in type(exc).__mro__:
        if cls in _DRF_CODES:
            code, title = _DRF_CODES[cls]
            generic = cls.default_code
            break
    # A subclass, view or parser may name a more specific code than DRF's generic one.
    specific = exc.get_codes()
    if isinstance(specific, str) and specific not in (generic, "invalid", "error"):
        code = specific
    # A parser's refusal may add members, e.g. the duplicate key's pointer (services/kit/parsers.py).
    members = getattr(exc, "problem_members", None) or {}
    return problem_body(
        status_code=exc.status_code, code=code, title=title, detail=str(exc.detail), instance=instance, **members
    ), headers


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: every error becomes problem details with a stable code."""
    request = context.get("request")
    instance = request.path if request is not None else None
    headers: dict[str, str] = {}
    if isinstance(exc, DomainError):
        body = problem_body(
            status_code=exc.status, code=exc.code, title=exc.title, detail=exc.detail, instance=instance, **exc.extra
        )
        headers = dict(exc.headers)
    elif isinstance(exc, Http404):
        body = problem_body(status_code=404, code="not_found", title="Not found", instance=instance)
    elif isinstance(exc, DjangoPermissionDenied):
        body = problem_body(status_code=403, code="permission_denied", title="Permission denied", instance=instance)
    elif isinstance(exc, RequestDataTooBig):
        body = problem_body(
            status_code=413, code="payload_too_large", title="Request body too large", instance=instance
        )
    elif isinstance(exc, SuspiciousOperation):
        body = problem_body(status_code=400, code="bad_request", title="Bad request", instance=instance)
    elif isinstance(exc, exceptions.APIException):
        body, headers = _drf_problem(exc, instance)
    elif isinstance(exc, DjangoValidationError):
        # A model's full_clean() reached from a view (a second line behind the serializers): the client's 400.
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        body, headers = _drf_problem(exceptions.ValidationError(detail), instance)
    elif isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable, restarting or too busy: the caller should retry (503), not count the
        # request as a failure of its own (a 500 says the request itself met a bug).
        body = problem_body(
            status_code=503,
            code="database_unavailable",
            title="Database unavailable",
            detail="The service could not reach its database; try again shortly.",
            instance=instance,
        )
        headers = {"Retry-After": "1"}
        log.error("request.database_unavailable", error=type(exc).__name__)
    else:
        return None  # a real bug: let Django log it and answer with handler500
    response = Response(body, status=body["status"], headers=headers, content_type=PROBLEM_CONTENT_TYPE)
    if body["status"] >= 500:
        log.error("request.failed", code=body["code"], status=body["status"])
    return response


# Django-level handlers for paths outside DRF: every root URLconf imports these four (its one error-view line).


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(request, status_code=400, code="bad_request", title="Bad request")


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(request, status_code=403, code="permission_denied", title="Permission denied")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(
        request, status_code=404, code="not_found", title="Not found", detail=f"No resource at {request.path}"
    )


def handler500(request: HttpRequest) -> HttpResponse:
    return problem_response(
        request,
        status_code=500,
        code="internal_error",
        title="Internal server error",
        detail="The server failed to handle this request; quote the request_id when reporting it.",
    )
