"""Per-request / per-task context carried through contextvars."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("atrium_request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("atrium_task_id", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
# A caller-supplied id is accepted only when it is short and made of safe characters,
# so it can go into log lines, headers and SQL without escaping surprises.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_new() -> str:
    """Return a fresh request id."""
    return f"req_{uuid.uuid4().hex}"


def request_id_clean(value: str | None) -> str | None:
    """Return ``value`` if it is an acceptable request id, else ``None``."""
    if value and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return None


def request_id_get() -> str | None:
    return request_id_var.get()
