"""Refusals of the API's writes, on record: a ``failure`` audit event with the refusal's code and detail,
committed in a transaction of its own after the refused write rolled back (so it stays on record)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction

from services.kit.audit import audit_event
from services.kit.outbox import outbox_put
from services.webhooks.errors import WebhooksError


def refusal_record(
    action: str, *, object_type: str, object_id: str = "", code: str, detail: str, **metadata: Any
) -> str:
    """Record the refusal of ``action`` (outcome ``failure``; ``metadata.code`` and ``detail``); its event id."""
    event = audit_event(
        action,
        outcome="failure",
        object_type=object_type,
        object_id=object_id,
        metadata={"code": code, "detail": detail, **metadata},
    )
    with transaction.atomic():
        return outbox_put("audit", event)


@contextmanager
def refusal_recorded(action: str, *, object_type: str, object_id: str = "", **metadata: Any) -> Iterator[None]:
    """Run a write; when it is refused (a webhooks error), record the refusal and re-raise."""
    try:
        yield
    except WebhooksError as exc:
        refusal_record(
            action, object_type=object_type, object_id=object_id, code=exc.code, detail=str(exc.detail), **metadata
        )
        raise
