"""Archival: a signed prefix of the audit log moves from ``audit_event`` to a self-verifying file.

``python manage.py audit_archive`` (see docs/audit.md, "Retention and archival") picks the newest signed
head older than the retention period, and for the events after the previous archive up to that head:

1. streams them in ``seq`` order and checks each one on the way (its hashes, its link to the previous
   event, its size and embedded ``seq``, the Merkle tree against every signed head in the range) — a log that
   does not verify is never archived (the file read back in step 3 is also held to every bound the standalone
   verifier checks: numbers, timestamps, sizes);
2. writes them to ``<AUDIT_ARCHIVE_DIR>/audit-<first>-<last>.jsonl.gz``: a header (the covering signed
   head, the heads in the range, and where the archive starts: the previous archive's head, its last
   chain hash and its Merkle frontier), one line per event (its canonical JSON, hashes and, by default,
   its inclusion proof against the covering head) and an end line (count and digest);
3. reads the file back with the standalone verifier (:func:`portal.audit.standalone_verifier.check_archive`);
4. records the archive in ``audit_archive`` together with an ``audit.log.archived`` audit event, and only
   then deletes the archived rows, in batches, each batch in a transaction that sets
   ``atrium.audit_archival`` — the one door the append-only trigger has. ``audit_node`` rows stay: they
   are small, hold no event content and keep later proofs answerable.

From then on ``audit_verify`` starts the live log from the archive's covering head (its last hash and the
stored Merkle frontier, which must hash to its signed root), so the chain stays verifiable end to end.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from portal.audit import queries
from portal.audit.chain import node_lookup
from portal.audit.errors import ArchiveError
from portal.audit.heads import head_as_dict
from portal.audit.keys import UNKNOWN_KEY, trusted_public_keys
from portal.audit.models import AuditArchive, AuditHead
from portal.audit.standalone_verifier import (
    ARCHIVE_FORMAT,
    EVENT_MAX_BYTES,
    ZERO_HASH,
    check_archive,
    frontier_root_hex,
    inclusion_path,
    node_hash,
)
from services.kit.audit import audit_record
from services.kit.logs import get_logger
from services.kit.outbox import isoformat

log = get_logger(__name__)

ACTOR = {"type": "system", "id": "audit_archive", "display": "manage.py audit_archive"}
DELETE_BATCH = 20_000
ARCHIVE_LOCK = 0x41554449545F4152  # "AUDIT_AR": one archival run at a time


@dataclass
class ArchivePlan:
    """Seqs [first_seq, last_seq] to archive: ``head`` covers last_seq, ``start_head`` is where it starts."""

    first_seq: int
    last_seq: int
    head: AuditHead
    start_head: AuditHead | None

    @property
    def events(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass
class ArchiveFile:
    path: Path
    sha256: str
    size: int
    events: int


def retention_cutoff(days: int | None = None) -> dt.datetime:
    """What was signed before this may be archived: ``days`` (default ``AUDIT_RETENTION_DAYS``) ago."""
    from django.conf import settings

    return timezone.now() - dt.timedelta(days=settings.AUDIT_RETENTION_DAYS if days is None else days)


def archived_upto() -> int:
    """The last archived seq (0: nothing archived); the live log starts after it."""
    return AuditArchive.objects.aggregate(upto=Max("last_seq"))["upto"] or 0


def frontier_at(size: int) -> dict[str, str]:
    """The Merkle tree's right frontier at ``size`` leaves, from ``audit_node`` (``{level: hex}``)."""
    wanted = {(level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1}
    stored = node_lookup(wanted)
    missing = wanted - set(stored)
    if missing:
        raise ArchiveError(f"Merkle nodes {sorted(missing)} of the tree at size {size} are not stored")
    return {str(level): stored[(level, index)].hex() for level, index in wanted}


def archive_plan(*, before: dt.datetime, max_events: int = 1_000_000, upto: int | None = None) -> ArchivePlan | None:
    """The next archive: from the last archived seq to the newest head signed before ``before`` (at most about
    ``max_events`` events: the newest such head within them, or the first head if none is), None if none."""
    start = archived_upto()
    heads = AuditHead.objects.filter(tree_size__gt=start, created_at__lt=before)
    if upto is not None:
        heads = heads.filter(tree_size__lte=upto)
    head = heads.filter(tree_size__lte=start + max_events).order_by("-tree_size").first()
    if head is None:
        head = heads.order_by("tree_size").first()
    if head is None:
        return None
    start_head = None
    if start:
        start_head = AuditHead.objects.filter(tree_size=start).first()
        if start_head is None:
            raise ArchiveError(f"the signed head at tree size {start} (the previous archive's) is not in audit_head")
    return ArchivePlan(start + 1, head.tree_size, head, start_head)


class _Nodes:
    """``complete(level, index)`` over ``audit_node``, loaded a window of indexes at a time (a few per level)."""

    WINDOW = 4096
    KEEP = 4

    def __init__(self) -> None:
        self.windows: dict[int, OrderedDict[int, dict[int, bytes]]] = {}

    def __call__(self, level: int, index: int) -> bytes:
        windows = self.windows.setdefault(level, OrderedDict())
        number = index // self.WINDOW
        window = windows.get(number)
        if window is None:
            with connection.cursor() as cursor:
                cursor.execute(queries.NODE_WINDOW, [level, number * self.WINDOW, (number + 1) * self.WINDOW])
                window = {i: bytes(h) for i, h in cursor.fetchall()}
            windows[number] = window
            while len(windows) > self.KEEP:
                windows.popitem(last=False)
        else:
            windows.move_to_end(number)
        try:
            return window[index]
        except KeyError:
            raise ArchiveError(f"no Merkle node at level {level}, index {index}") from None


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def archive_write(plan: ArchivePlan, directory: Path, *, proofs: bool = True, batch: int = 10_000) -> ArchiveFile:
    """Write (and check) the archive file of ``plan``; raise :class:`ArchiveError` if the log does not verify."""
    connection.ensure_connection()
    start = plan.first_seq - 1
    frontier_hex = frontier_at(start) if start else {}
    last_hash = bytes.fromhex(plan.start_head.last_hash) if plan.start_head is not None else ZERO_HASH
    if plan.start_head is not None and frontier_root_hex(frontier_hex).hex() != plan.start_head.root_hash:
        raise ArchiveError(f"the stored Merkle frontier at {start} does not hash to its signed head's root")
    heads = [head_as_dict(h) for h in AuditHead.objects.filter(tree_size__gt=start, tree_size__lte=plan.last_seq)]
    heads.sort(key=lambda h: h["tree_size"])
    by_size = {h["tree_size"]: h for h in heads}
    header = {
        "format": ARCHIVE_FORMAT,
        "first_seq": plan.first_seq,
        "last_seq": plan.last_seq,
        "created_at": isoformat(timezone.now()),
        "head": head_as_dict(plan.head),
        "heads": heads,
        "start": {
            "tree_size": start,
            "last_hash": last_hash.hex(),
            "frontier": frontier_hex,
            "head": head_as_dict(plan.start_head) if plan.start_head is not None else None,
        },
        "proofs": proofs,
    }
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"audit-{plan.first_seq:012d}-{plan.last_seq:012d}.jsonl.gz"
    partial = final.with_name(final.name + ".partial")
    nodes = _Nodes()
    frontier = {int(level): bytes.fromhex(h) for level, h in frontier_hex.items()}
    body = hashlib.sha256()
    size, prev, count = start, last_hash, 0
    sha256 = hashlib.sha256
    try:
        with gzip.open(partial, "wb", compresslevel=6) as out, transaction.atomic():
            first = _line(header)
            body.update(first)
            out.write(first)
            with connection.connection.cursor(name="audit_archive") as cursor:
                cursor.itersize = batch
                cursor.execute(queries.ARCHIVE_EVENTS, [plan.first_seq, plan.last_seq])
                for seq, text, leaf, digest, prev_hash in cursor:
                    data = text.encode("utf-8")
                    leaf, digest, prev_hash = bytes(leaf), bytes(digest), bytes(prev_hash)
                    if seq != size + 1:
                        raise ArchiveError(f"seq {size + 1} is missing (the next row is seq {seq})")
                    if (
                        prev_hash != prev
                        or sha256(data + prev).digest() != digest
                        or sha256(b"\x00" + data).digest() != leaf
                    ):
                        raise ArchiveError(f"seq {seq} does not verify (hashes or link); run audit_verify")
                    if len(data) > EVENT_MAX_BYTES:  # never parsed: no event the sequencer writes is this big
                        raise ArchiveError(f"seq {seq} is larger than any event the sequencer writes; run audit_verify")
                    if json.loads(data).get("seq") != seq:
                        raise ArchiveError(f"seq {seq} holds an event chained under another seq; run audit_verify")
                    line: dict[str, Any] = {
                        "seq": seq,
                        "canonical": text,
                        "leaf_hash": leaf.hex(),
                        "hash": digest.hex(),
                        "prev_hash": prev_hash.hex(),
                    }
                    if proofs:
                        line["proof"] = [p.hex() for p in inclusion_path(seq - 1, plan.last_seq, nodes)]
                    encoded = _line(line)
                    body.update(encoded)
                    out.write(encoded)
                    carry, level = leaf, 0
                    while size >> level & 1:
                        carry = node_hash(frontier.pop(level), carry)
                        level += 1
                    frontier[level] = carry
                    size, prev, count = seq, digest, count + 1
                    signed = by_size.get(size)
                    if signed is not None:
                        root = frontier_root_hex({str(k): v.hex() for k, v in frontier.items()}).hex()
                        if root != signed["root_hash"] or prev.hex() != signed["last_hash"]:
                            raise ArchiveError(f"the signed head at tree size {size} does not match the events")
            if size != plan.last_seq:
                raise ArchiveError(f"the log ends at seq {size}, the head covers {plan.last_seq}")
            out.write(_line({"end": True, "events": count, "body_sha256": body.hexdigest()}))
        with partial.open("rb+") as handle:
            os.fsync(handle.fileno())
        check = check_archive(partial, trusted_public_keys(), proofs=proofs, unknown=UNKNOWN_KEY)
        if check.problems:
            raise ArchiveError(f"the written archive does not verify: {check.problems[0]}")
        partial.replace(final)
        _fsync_dir(directory)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ArchiveFile(final, _file_sha256(final), final.stat().st_size, count)


def archive_commit(plan: ArchivePlan, written: ArchiveFile) -> AuditArchive:
    """Record the archive (and its audit event) in one transaction, then delete the archived rows."""
    row = archive_record(plan, written)
    delete_archived()
    return row


def archive_record(plan: ArchivePlan, written: ArchiveFile) -> AuditArchive:
    """Record the archive and its ``audit.log.archived`` event in one transaction (nothing deleted yet)."""
    with transaction.atomic():
        row = AuditArchive.objects.create(
            first_seq=plan.first_seq,
            last_seq=plan.last_seq,
            events=written.events,
            path=str(written.path),
            file_sha256=written.sha256,
            file_bytes=written.size,
            head_root_hash=plan.head.root_hash,
            head_last_hash=plan.head.last_hash,
        )
        audit_record(
            "audit.log.archived",
            object_type="audit_archive",
            object_id=f"{plan.first_seq}-{plan.last_seq}",
            metadata={
                "first_seq": plan.first_seq,
                "last_seq": plan.last_seq,
                "events": written.events,
                "file": written.path.name,
                "file_sha256": written.sha256,
                "head_root_hash": plan.head.root_hash,
            },
            actor=ACTOR,
        )
    log.info("audit.archived", first_seq=plan.first_seq, last_seq=plan.last_seq, file=str(written.path))
    return row


def delete_archived(*, batch: int = DELETE_BATCH) -> int:
    """Delete live rows at or below the last archived seq (also what an interrupted run left), in batches."""
    upto = archived_upto()
    deleted = 0
    while upto:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(queries.ARCHIVAL_DOOR_OPEN)
            cursor.execute(queries.ARCHIVED_DELETE, [upto, batch])
            count = cursor.rowcount
        deleted += count
        if count < batch:
            break
    return deleted


def archive_run(
    *,
    before: dt.datetime,
    directory: Path,
    max_events: int = 1_000_000,
    upto: int | None = None,
    proofs: bool = True,
) -> list[AuditArchive]:
    """Archive every signed prefix older than ``before`` (one file per ``max_events`` or so).

    One run at a time (a session advisory lock): a second one raises :class:`ArchiveError` at once.
    """
    with connection.cursor() as cursor:
        cursor.execute(queries.SESSION_LOCK_TRY, [ARCHIVE_LOCK])
        if not cursor.fetchone()[0]:
            raise ArchiveError("another audit_archive run holds the archival lock")
    try:
        delete_archived()  # finish what an interrupted run left
        done: list[AuditArchive] = []
        while (plan := archive_plan(before=before, max_events=max_events, upto=upto)) is not None:
            written = archive_write(plan, directory, proofs=proofs)
            done.append(archive_commit(plan, written))
        return done
    finally:
        with connection.cursor() as cursor:
            cursor.execute(queries.SESSION_LOCK_RELEASE, [ARCHIVE_LOCK])
