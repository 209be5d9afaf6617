"""Audit events: who did what, when, from where, with what result — written through the outbox.

Call :func:`audit_record` inside the same database transaction as the change it describes. The
event gets the request's id, source IP, user agent and actor from the current request (or the
current Celery task: actor ``system``) unless given explicitly; secrets are redacted before the
event is written, so they never leave the service.

An event written by a Celery task keeps the task's id as ``metadata.task_id`` (the job that caused it). A task
working for many requests (a batch) gives each event the request id of the item it is about — under
:func:`services.kit.carry.acting_for`, or with ``audit_event(request_id=...)`` — so one request id finds what the
batch did for that request, and the task id finds the batch.
"""

from __future__ import annotations

import datetime as dt
import re
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from services.kit.context import request_id_var, task_id_var
from services.kit.db import Pipeline, WriteTransaction
from services.kit.outbox import isoformat, outbox_put
from services.kit.redaction import REDACTED, redact, sensitive
from services.kit.telemetry import telemetry_enabled, trace_parent

current_request_var: ContextVar[HttpRequest | None] = ContextVar("atrium_current_request", default=None)

# A person signed in through the portal (services/kit/sso.py): their portal id (``sub``) is kept in the session,
# and events name them by it, so one person has one actor id in every service's events and the portal's.
SSO_SUB_SESSION_KEY = "atrium_sso_sub"

OUTCOMES = ("success", "failure")
ACTOR_TYPES = ("user", "client", "system")
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_USER_AGENT = 512


def redact_changes(changes: dict[str, Any]) -> dict[str, list[Any]]:
    """``{field: [before, after]}`` with sensitive fields' values redacted (that they changed stays visible)."""
    out: dict[str, list[Any]] = {}
    for field, pair in changes.items():
        before, after = ([*list(pair), None, None])[:2] if isinstance(pair, (list, tuple)) else (None, pair)
        if sensitive(str(field)):
            out[str(field)] = [REDACTED if before is not None else None, REDACTED if after is not None else None]
        else:
            out[str(field)] = [redact(_jsonable(before)), redact(_jsonable(after))]
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return isoformat(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def actor_of(user: Any, request: HttpRequest | None = None) -> dict[str, str]:
    """The actor for a request's ``user``: a machine client, a user, or the system. A person signed in through
    the portal is named by their portal id (the session's ``sub``), not this service's row id."""
    if user is None or not getattr(user, "is_authenticated", False):
        return {"type": "system", "id": "anonymous", "display": "anonymous"}
    client_id = getattr(user, "client_id", None)
    if client_id:
        return {"type": "client", "id": str(client_id), "display": str(client_id)}
    session = getattr(request, "session", None) if request is not None else None
    sub = session.get(SSO_SUB_SESSION_KEY) if session is not None and getattr(request, "user", None) == user else None
    return {"type": "user", "id": str(sub or user.pk), "display": user.get_username()}


def source_ip_of(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the first X-Forwarded-For hop when ``ATRIUM_TRUST_X_FORWARDED_FOR`` is set."""
    if getattr(settings, "ATRIUM_TRUST_X_FORWARDED_FOR", False):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64]
    return str(request.META.get("REMOTE_ADDR", ""))[:64]


def audit_context(request: HttpRequest | None = None, actor: dict[str, str] | None = None) -> dict[str, Any]:
    """Who, from where, under which request id: the part of an event shared by every event of one request."""
    request = request if request is not None else current_request_var.get()
    if actor is None:
        actor = actor_of(getattr(request, "user", None), request) if request is not None else None
        if actor is None or (actor["type"] == "system" and request is None):
            actor = {"type": "system", "id": settings.ATRIUM_SERVICE, "display": settings.ATRIUM_SERVICE}
    if actor.get("type") not in ACTOR_TYPES:
        raise ValueError(f"audit actor type must be one of {ACTOR_TYPES}")
    context = {
        "actor": {"type": actor["type"], "id": str(actor.get("id", "")), "display": str(actor.get("display", ""))},
        "request_id": request_id_var.get() or "",
        "source_ip": source_ip_of(request) if request is not None else "",
        "user_agent": (request.META.get("HTTP_USER_AGENT", "")[:MAX_USER_AGENT] if request is not None else ""),
    }
    task_id = task_id_var.get()
    if task_id:
        context["task_id"] = task_id
    if telemetry_enabled():  # the portal's ingest links to it; the chain leaves it out (never hashed)
        parent = trace_parent()
        if parent:
            context["trace_parent"] = parent
    return context


def audit_event(
    action: str,
    *,
    outcome: str = "success",
    object_type: str = "",
    object_id: str = "",
    changes: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    actor: dict[str, str] | None = None,
    occurred_at: dt.datetime | None = None,
    request: HttpRequest | None = None,
    context: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Build (and redact) the event body; ``audit_record`` writes it. ``context`` (from :func:`audit_context`)
    saves recomputing the actor and request fields for each event of a batch; ``request_id`` (when not empty)
    replaces the context's: the request that created the item a batch is working on."""
    if not _ACTION.fullmatch(action):
        raise ValueError(f"audit action must be dotted lower-case words, got {action!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {OUTCOMES}, got {outcome!r}")
    shared = context if context is not None else audit_context(request, actor)
    body = {
        "action": action,
        "outcome": outcome,
        "occurred_at": isoformat(occurred_at or timezone.now()),
        "actor": shared["actor"],
        "request_id": request_id or shared["request_id"],
        "source_ip": shared["source_ip"],
        "user_agent": shared["user_agent"],
        "object": {"type": object_type, "id": str(object_id)},
        "changes": redact_changes(changes) if changes else {},
        "metadata": redact(_jsonable(metadata)) if metadata else {},
    }
    task_id = shared.get("task_id")
    if task_id:
        body["metadata"].setdefault("task_id", task_id)
    if shared.get("trace_parent"):
        body["trace_parent"] = shared["trace_parent"]  # OpenTelemetry on: the span that wrote it (never hashed)
    return body


def audit_record(
    action: str,
    *,
    outcome: str = "success",
    object_type: str = "",
    object_id: str = "",
    changes: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    actor: dict[str, str] | None = None,
    occurred_at: dt.datetime | None = None,
    request: HttpRequest | None = None,
    pipeline: Pipeline | None = None,
    tx: WriteTransaction | None = None,
) -> str:
    """Record an audit event in the current database transaction (through the outbox); return its id."""
    body = audit_event(
        action,
        outcome=outcome,
        object_type=object_type,
        object_id=object_id,
        changes=changes,
        metadata=metadata,
        actor=actor,
        occurred_at=occurred_at,
        request=request,
    )
    return outbox_put("audit", body, pipeline=pipeline, tx=tx)
