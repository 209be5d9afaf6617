"""Structured logging: JSON lines on stdout and an event-style logger.

Use ``log = get_logger(__name__)`` then ``log.info("payment.settled", payment_id=pid)``:
the first argument is a stable event name, keyword arguments become JSON fields.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import traceback
from typing import Any

from services.kit.context import request_id_var, task_id_var

# Attributes every LogRecord has; anything else on a record is an extra field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SENSITIVE = ("password", "secret", "token", "authorization", "api_key", "private_key")


class ContextFilter(logging.Filter):
    """Stamp each record with the process's service name and the current request/task ids."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = getattr(record, "service", None) or self.service
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "task_id", None) is None:
            record.task_id = task_id_var.get()
        return True


def _is_sensitive(key: str) -> bool:
    return any(word in key.lower() for word in _SENSITIVE)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): "[redacted]" if _is_sensitive(str(k)) else _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return repr(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, service, request_id, task_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "service": getattr(record, "service", None),
            "request_id": getattr(record, "request_id", None),
            "task_id": getattr(record, "task_id", None),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key in ("service", "request_id", "task_id"):
                continue
            if key in payload:
                key = f"{key}_"  # a field named "ts", "level", "event" or "logger" must not vanish
            payload[key] = "[redacted]" if _is_sensitive(key) else _jsonable(value)
        if record.exc_info:
            payload["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            payload["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(payload, default=repr, ensure_ascii=False)


class EventLogger(logging.LoggerAdapter):
    """A logger whose keyword arguments become structured fields."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        reserved = {"exc_info", "stack_info", "stacklevel", "extra"}
        # A field named like a LogRecord attribute ("message", "name", ...) would clash; suffix it.
        fields = {(f"{k}_" if k in _STANDARD_ATTRS else k): kwargs.pop(k) for k in list(kwargs) if k not in reserved}
        extra = dict(kwargs.get("extra") or {})
        extra.update(fields)
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(name: str) -> EventLogger:
    """Return an event-style structured logger."""
    return EventLogger(logging.getLogger(name), {})
