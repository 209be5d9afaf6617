"""Audit writes: recording who read the log, signing heads on request, ingesting, archiving.

The API, the admin, the management commands and the ``audit`` worker's tasks call these; the engines they
delegate to are :mod:`portal.audit.chain` (the sequencer, which parks what it cannot chain in its place),
:mod:`portal.audit.heads` (signing) and :mod:`portal.audit.archive`. Reads are in :mod:`portal.audit.selectors`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.db import transaction

from portal.audit import archive, chain, heads, intake
from portal.audit.errors import AuditLogEmpty
from portal.audit.models import AuditArchive, AuditHead
from portal.audit.selectors import head_latest
from services.kit.audit import audit_record


def access_record(
    *,
    action: str,
    object_type: str = "audit_log",
    object_id: str = "portal",
    outcome: str = "success",
    metadata: dict[str, Any] | None = None,
) -> None:
    """Record that someone read (or was refused) the audit trail: every read is itself audited."""
    with transaction.atomic():
        audit_record(action, outcome=outcome, object_type=object_type, object_id=object_id, metadata=metadata or {})


VERIFY_ACTOR = {"type": "system", "id": "audit_verify", "display": "manage.py audit_verify"}


def verification_record(*, outcome: str, metadata: dict[str, Any]) -> None:
    """Audit a run of ``audit_verify`` (in its own transaction, after the verification's read-only one)."""
    with transaction.atomic():
        audit_record(
            "audit.log.verified",
            outcome=outcome,
            object_type="audit_log",
            object_id="portal",
            metadata=metadata,
            actor=VERIFY_ACTOR,
        )


def head_sign_now() -> tuple[AuditHead, bool]:
    """Sign the current tree now (``POST /api/v1/audit/heads``); the head, and whether it is new.

    The same head comes back, not a new one, while the log has not grown since the last head.
    """
    before = head_latest()
    head = heads.head_sign()
    if head is None:
        raise AuditLogEmpty("The audit log is empty: there is nothing to sign yet.")
    created = before is None or head.tree_size != before.tree_size
    access_record(
        action="audit.head.signed",
        object_type="audit_head",
        object_id=str(head.tree_size),
        metadata={"on_demand": True},
    )
    return head, created


def event_ingest(*, events: list[Any]) -> chain.IngestResult:
    """Chain a batch of events from a service's outbox (see :func:`portal.audit.chain.ingest`)."""
    return chain.ingest(events)


def events_ingest_http(*, body: Any, client_id: str) -> intake.IntakeResult:
    """``POST /api/v1/audit/events:ingest``: check the envelope, the caller's identity and each service's sequence,
    then chain (see :mod:`portal.audit.intake`). A refusal raises its problem after keeping the events aside."""
    events = intake.envelope_check(body, client_id=client_id)
    return intake.events_ingest(events, client_id=client_id)


def body_refused_keep(*, raw: bytes, code: str, detail: str, client_id: str | None) -> None:
    """Keep a body the parser refused (not JSON, too deep...) in ``audit_rejected``: nothing sent is lost."""
    intake.raw_keep(raw, code=code, detail=detail, client_id=client_id)


def head_sign() -> AuditHead | None:
    """Sign the tree head if the log grew since the last one (the beat task)."""
    return heads.head_sign()


def archive_run(
    *, before: dt.datetime, directory: Path, max_events: int = 1_000_000, upto: int | None = None, proofs: bool = True
) -> list[AuditArchive]:
    """Archive every signed prefix older than ``before`` (see :mod:`portal.audit.archive`)."""
    return archive.archive_run(before=before, directory=directory, max_events=max_events, upto=upto, proofs=proofs)
