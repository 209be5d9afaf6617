"""Structured logging: JSON lines on stdout and an event-style logger.

Use ``log = get_logger(__name__)`` then ``log.info("payment.settled", payment_id=pid)``:
the first argument is a stable event name, keyword arguments become JSON fields.
In dev (``ATRIUM_LOG_FORMAT=console``, set by ``make up``) each event is one readable line instead.
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


_COLOURS = {"DEBUG": "\033[2m", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}
_RESET = "\033[0m"


def _console_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(_jsonable(value), default=repr, ensure_ascii=False)
    return json.dumps(text, ensure_ascii=False) if not text or any(c in text for c in ' "=\n') else text


class ConsoleFormatter(logging.Formatter):
    """One readable line per event for a developer's console: level, event, fields, ``[request id]``
    (``make up`` puts the time and the process name in front), the level in colour when ``colour``."""

    def __init__(self, colour: bool = False) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname:<7}"
        if self.colour and record.levelname in _COLOURS:
            level = f"{_COLOURS[record.levelname]}{level}{_RESET}"
        parts = [level, record.getMessage()]
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key in ("service", "request_id", "task_id"):
                continue
            if key == "data" and record.name.startswith("celery"):  # Celery's copy of what its message says
                continue
            parts.append(f"{key}={'[redacted]' if _is_sensitive(key) else _console_value(value)}")
        request_id = getattr(record, "request_id", None)
        if request_id:
            parts.append(f"[{request_id}]")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        return line


class QuietTasks(logging.Filter):
    """Celery's own lines about frequent periodic tasks (beat sending them, a worker receiving and finishing
    them) are DEBUG, not INFO: an idle system prints nothing every few seconds. Their failures stay loud."""

    _MESSAGES = ("Scheduler: Sending due task", "Task %(name)s[%(id)s] received", "Task %(name)s[%(id)s] succeeded")

    def __init__(self, tasks: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__()
        self.tasks = frozenset(tasks)

    def _task(self, record: logging.LogRecord) -> str | None:
        if isinstance(record.args, dict):
            return record.args.get("name")
        if isinstance(record.args, tuple) and len(record.args) == 2:  # beat: (entry name, task name)
            return str(record.args[1])
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno == logging.INFO
            and isinstance(record.msg, str)
            and record.msg.startswith(self._MESSAGES)
            and self._task(record) in self.tasks
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


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
