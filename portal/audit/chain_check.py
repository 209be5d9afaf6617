"""Full verification of the audit log: chain, Merkle roots, signed heads (database and file), service gaps.

:func:`verify_log` streams ``audit_event`` in ``seq`` order with a binary COPY, the canonical JSON fetched as
bytes and never parsed in Python unless a row is already suspect (the loop is :mod:`portal.audit.parallel_stream`).
For each row Python recomputes the chain hash ``SHA-256(canonical ‖ previous hash)`` and the Merkle leaf
``SHA-256(0x00 ‖ canonical)`` and checks the link to the previous row, folds the leaf into the tree's right
frontier and, at every signed head's size, compares the recomputed root and last hash with the head. A long
log is streamed in two halves at once, the second in another process starting from what the database
claims at the midpoint; that result stands only if the first half ends exactly on those claims and neither
half found a problem, otherwise the whole log is streamed again in one pass (see :func:`_stream_halves`).

The search columns of each row must still say what its hashed JSON says. Rows a valid seal vouches for
(written by the sequencer's own transaction and never rewritten since, see :mod:`portal.audit.seal`) are
trusted; every other row is compared field by field in SQL, by a second connection (its own PostgreSQL
backend) chunk by chunk while the stream runs, and by the first connection once the stream is done.
``all_columns`` compares every row. All connections read one REPEATABLE READ snapshot (exported by the
first), so rows committed meanwhile are not half seen.

Every signed head, from the database and from the copy kept outside it (the sink ``AUDIT_HEADS_SINK`` names:
the JSONL file ``AUDIT_HEADS_PATH`` by default, an S3 bucket in production; called "the file" in the
messages below), has its Ed25519 signature checked; the two copies must agree. At the end the
sequencer's state (size, last hash, Merkle frontier) and the stored ``audit_node`` rows along the
frontier must equal the recomputed ones.

Every problem is kept (:attr:`VerifyReport.problems`); :attr:`VerifyReport.first` is the one with the
lowest ``seq``. The reasons, and the rule that picks each:

``modified``
    A row's stored hash or leaf hash is not what its canonical JSON hashes to; or its search columns
    disagree with its canonical JSON; or the row hashes correctly but the *next* row links to a different
    hash (the row was rewritten and re-hashed: reported at the rewritten row); or a row neither links to
    its predecessor nor is linked to by its successor (it was replaced). Also, once every event is right:
    a stored Merkle node along the frontier (reported at the last ``seq`` it covers), or the sequencer's
    last hash or frontier, that differs from the recomputed one.
``missing``
    A ``seq`` is absent (a row was deleted, reported at the first absent ``seq``); or a row's canonical
    JSON was chained under a higher ``seq`` than the one it now has (rows were deleted and the rest
    renumbered down, reported at the first renumbered row); or the table ends before the sequencer's
    recorded size.
``inserted``
    A row hashes correctly and its ``seq`` fits, but its successor links past it to its predecessor (it
    was slipped in and the rest renumbered up); or a row's canonical JSON was chained under a lower ``seq``
    than the one it now has (reported at the first row that is not the original one); or a row beyond the
    sequencer's recorded size (appended behind its back).
``forged head``
    A head whose signature is invalid, whose root or last hash differs from the recomputed tree, that is
    beyond the end of the log, or that differs between the database and the file. Reported at its tree size.
``head missing``
    A correctly signed head in the file but not the database, or in the database but not the file.
``forged seal``
    A seal whose MAC does not verify under the signing key (its rows are then compared field by field).
``out of range``
    A value the sequencer never writes (``portal.audit.standalone_verifier``: ``EVENT_MAX_BYTES``,
    ``CLOCK_SKEW_SECONDS``),
    at the row that holds it: a seq below 1; a canonical JSON over 1 MiB; a ``recorded_at`` before 2000, in the
    future, earlier than the previous row's, or later than a signed head covering the row; an ``occurred_at``
    before 2000 or more than the clock skew after its ``recorded_at``; a service sequence number below 1, or
    reached by a jump over more numbers than can be in flight (``AUDIT_VERIFY_SERVICE_GAP_MAX``). A service
    sequence number two rows hold is ``inserted`` (at the later row), and a row beyond the sequencer's recorded
    size is ``inserted`` where such rows begin, however far beyond it is.

Every check costs time in proportion to the rows present, never to the values they hold: gaps are found by
comparing each row with the one before it (in seq order while streaming, in service sequence order with
``lag()``), the column check is cut into chunks of rows, and nothing builds a series or loops over a range
of numbers found in the data.

After archival (``audit_archive``) the live log starts after the last archive: the chain from that archive's
signed head's last hash, the Merkle tree from the frontier stored in ``audit_node`` at that size (which must
hash to the head's signed root). The archives must follow one another from seq 1, each ending at a validly
signed head whose hashes it recorded; with ``archive_files`` every archive file is also checked in full.

Limits: an event appended after the last signed head by someone who also updates the sequencer's state
(``audit_chain_state``) with a consistent hash is indistinguishable from a real one until the next head
is signed; and a rewrite of a whole suffix with every hash recomputed shows only as a ``forged head`` at
the first signed head after it (the heads are what the key protects). A head in the file at or beyond the
snapshot's log size but not in the snapshot may have been signed since: only its signature is checked.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, DataError, connection, transaction
from django.utils import timezone

from portal.audit import heads as heads_mod
from portal.audit import queries
from portal.audit.chain import node_lookup
from portal.audit.keys import UNKNOWN_KEY, trusted_public_keys
from portal.audit.models import AuditArchive, AuditChainState, AuditEvent, AuditHead
from portal.audit.parallel_stream import (
    NO_END,
    STREAM_TYPES,
    Chain,
    Clock,
    Heads,
    Problem,
    Seals,
    micros,
    nodes_root,
    stream_part,
    stream_rows,
)
from portal.audit.seal import seals_load
from portal.audit.standalone_verifier import SEQ_MAX, ZERO_HASH

SERVICE_ANOMALIES_MAX = 10_000  # rows of queries.SERVICE_SEQUENCE (each a gap, however wide, or a bad number)
SERVICE_GAP_NUMBERS_MAX = 10_000  # missing numbers listed in the report (the count is always exact)
COLUMN_PROBLEMS_MAX = 100  # rows reported for column disagreement (the first ones)
COLUMN_CHUNK = 25_000  # rows per column-check query (shared out between the two connections)
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


@dataclass
class VerifyReport:
    """What :func:`verify_log` found: counts, timing, every problem, and service sequence gaps (warnings)."""

    events: int = 0
    archived: int = 0  # events before the live log (in archive files)
    heads: int = 0
    columns_compared: int = 0  # rows compared with their JSON field by field (the rest: sealed, untouched)
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    service_gaps: dict[str, list[int]] = field(default_factory=dict)  # the first missing numbers
    service_missing: dict[str, int] = field(default_factory=dict)  # how many numbers are missing, per service

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (service gaps: the first 20 per service)."""
        first = self.first
        return {
            "ok": self.ok,
            "events": self.events,
            "archived": self.archived,
            "heads": self.heads,
            "columns_compared": self.columns_compared,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second),
            "first_problem": None
            if first is None
            else {"seq": first.seq, "reason": first.reason, "detail": first.detail},
            "problems": len(self.problems),
            "service_gaps": {s: gaps[:20] for s, gaps in self.service_gaps.items()},
            "service_missing": dict(self.service_missing),
        }


# --- signed heads -------------------------------------------------------------------------------------------


def _heads_check(state_size: int, problems: list[Problem]) -> Heads:
    """Signatures, database against file; return every distinct head to compare with the tree, by size.

    The file is read after the database snapshot was taken, so it may hold heads signed since: a correctly
    signed file head at or beyond the snapshot's log size that the snapshot does not show is not a problem.
    """
    keys = trusted_public_keys()
    db = {h.tree_size: heads_mod.head_as_dict(h) for h in AuditHead.objects.order_by("tree_size")}
    file: dict[int, dict[str, Any]] = {}
    for head in heads_mod.heads_outside_read():
        size = head.get("tree_size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= SEQ_MAX:
            shown = repr(size) if len(repr(size)) <= 40 else f"{repr(size)[:37]}..."
            problems.append(Problem(0, "forged head", f"the file holds a head whose tree size is {shown}"))
            continue
        if size in file and file[size] != head:
            problems.append(Problem(size, "forged head", f"the file holds two different heads at tree size {size}"))
        file.setdefault(size, head)
    to_compare: Heads = {}
    for size in sorted(set(db) | set(file)):
        in_db, in_file = db.get(size), file.get(size)
        why = {
            where: heads_mod.head_signature_problem(head, keys)
            for where, head in (("database", in_db), ("file", in_file))
            if head
        }
        signed = {where: reason is None for where, reason in why.items()}
        for where, reason in why.items():
            if reason is not None:
                problems.append(
                    Problem(
                        size, "forged head", f"the {where}'s head at tree size {size}: invalid signature ({reason})"
                    )
                )
        if in_db is not None and in_file is not None and in_db != in_file:
            fields = sorted(k for k in set(in_db) | set(in_file) if in_db.get(k) != in_file.get(k))
            problems.append(
                Problem(size, "forged head", f"head at tree size {size} differs between database and file: {fields}")
            )
        elif in_db is None and signed["file"] and size < state_size:
            problems.append(Problem(size, "head missing", f"head at tree size {size} is in the file, not the database"))
        elif in_file is None and signed["database"]:
            problems.append(Problem(size, "head missing", f"head at tree size {size} is in the database, not the file"))
        if in_db is not None and in_db == in_file:
            to_compare[size] = [("database and file", in_db, signed["database"])]
        else:
            copies = (("database", in_db), ("file", in_file))
            to_compare[size] = [(where, head, signed[where]) for where, head in copies if head]
    return to_compare


# --- the checks PostgreSQL does, on a second connection -------------------------------------------------------


Disagreement = tuple[int, int | None, bool]  # seq, the seq in its JSON, whether every other column agrees


def _columns_disagree(cursor: Any, low: int, high: int, out: list[Disagreement]) -> None:
    """Rows in [low, high] whose columns disagree with their JSON; a row whose JSON does not even cast counts.

    A canonical text that is not JSON (or a field of the wrong type or size) makes the query fail: the rows
    present are then halved (by count, not by seq) until the failing row is alone.
    """
    if low > high or len(out) >= COLUMN_PROBLEMS_MAX:
        return
    if _columns_query(cursor, low, high, out):
        return
    cursor.execute(queries.SEQS_BETWEEN, [low, high])
    _columns_halve(cursor, [row[0] for row in cursor.fetchall()], out)


def _columns_halve(cursor: Any, seqs: list[int], out: list[Disagreement]) -> None:
    if not seqs or len(out) >= COLUMN_PROBLEMS_MAX:
        return
    if len(seqs) == 1:
        out.append((seqs[0], None, False))
        return
    middle = len(seqs) // 2
    for part in (seqs[:middle], seqs[middle:]):
        if not _columns_query(cursor, part[0], part[-1], out):
            _columns_halve(cursor, part, out)


def _columns_query(cursor: Any, low: int, high: int, out: list[Disagreement]) -> bool:
    """Run the column check on [low, high]; False if a row's JSON or a field of it cannot be read at all."""
    try:
        with transaction.atomic():
            cursor.execute(queries.COLUMNS_DISAGREE, [low, high, COLUMN_PROBLEMS_MAX - len(out)])
            out.extend(cursor.fetchall())
    except DatabaseError as exc:
        if not _row_error(exc):
            raise
        return False
    return True


def _row_error(exc: DatabaseError) -> bool:
    """Whether PostgreSQL refused a value (a data exception, or a program limit such as JSON nested too
    deeply), as opposed to the connection or the server failing."""
    state = str(getattr(exc.__cause__, "sqlstate", "") or "")
    return isinstance(exc, DataError) or state[:2] in ("22", "54")


def _service_sequences(cursor: Any, *, archived: bool, report: VerifyReport) -> None:
    """Each service's sequence: gaps (warnings: maybe in flight), and what cannot be in flight (problems).

    A number below 1, a number two rows hold, or a jump over more numbers than ``AUDIT_VERIFY_SERVICE_GAP_MAX``
    (more events than can be on their way: the relays deliver in order, in batches) is reported as tampering at
    the row that holds it.
    """
    gap_max = int(getattr(settings, "AUDIT_VERIFY_SERVICE_GAP_MAX", 10_000_000))
    listed = 0
    cursor.execute(queries.SERVICE_SEQUENCE, [archived, SERVICE_ANOMALIES_MAX])
    for service, number, seq, prev, prev_seq in cursor.fetchall():
        if number < 1:
            report.problems.append(
                Problem(seq, "out of range", f"seq {seq}: its {service} sequence number {number} is below 1")
            )
            continue
        if prev == number:
            later, earlier = max(seq, prev_seq), min(seq, prev_seq)
            detail = f"seq {later} holds {service} sequence number {number}, as seq {earlier} does"
            report.problems.append(Problem(later, "inserted", detail))
            continue
        low = 1 if prev is None else max(prev + 1, 1)
        missing = number - low
        if missing > gap_max:
            report.problems.append(
                Problem(
                    seq,
                    "out of range",
                    f"seq {seq}: {service} sequence jumps from {low - 1} to {number}: {missing} events cannot be in "
                    f"flight (at most {gap_max}, AUDIT_VERIFY_SERVICE_GAP_MAX)",
                )
            )
            continue
        report.service_missing[service] = report.service_missing.get(service, 0) + missing
        take = min(missing, SERVICE_GAP_NUMBERS_MAX - listed)
        if take > 0:
            report.service_gaps.setdefault(service, []).extend(range(low, low + take))
            listed += take


class _ColumnWork:
    """The column check over ranges of seqs, in chunks of ``COLUMN_CHUNK`` rows (rows present: a range's width
    costs nothing) taken by whichever connection is free (thread-safe).

    It starts with the ranges no seal covers; the stream adds the sealed rows whose ``xmin`` changed.
    """

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self.ranges = [list(r) for r in ranges if r[0] <= r[1]]
        self.compared = 0  # rows handed out
        self.disagreeing: list[Disagreement] = []
        self.lock = threading.Lock()

    def add(self, ranges: list[list[int]]) -> None:
        with self.lock:
            self.ranges.extend([low, high] for low, high in ranges)

    def _take(self, cursor: Any) -> tuple[int, int] | None:
        """The next chunk: up to ``COLUMN_CHUNK`` rows from the start of the first range (found on the index)."""
        with self.lock:
            while self.ranges and len(self.disagreeing) < COLUMN_PROBLEMS_MAX:
                chunk = self.ranges[0]
                cursor.execute(queries.COLUMN_CHUNK_ROWS, [chunk[0], chunk[1], COLUMN_CHUNK])
                rows, end = cursor.fetchone()
                low = chunk[0]
                if rows < COLUMN_CHUNK or end >= chunk[1]:
                    self.ranges.pop(0)
                else:
                    chunk[0] = end + 1
                if rows:
                    self.compared += rows
                    return low, end
            return None

    def run(self, cursor: Any) -> None:
        """Check chunks on ``cursor`` until none is left."""
        while (chunk := self._take(cursor)) is not None:
            found: list[Disagreement] = []
            _columns_disagree(cursor, chunk[0], chunk[1], found)
            with self.lock:
                self.disagreeing.extend(found)

    def cancel(self) -> None:
        """Hand out no more chunks."""
        with self.lock:
            self.ranges = []

    def result(self) -> list[Disagreement]:
        return sorted(self.disagreeing)[:COLUMN_PROBLEMS_MAX]


class _ColumnChecker(threading.Thread):
    """Column-check chunks on this thread's own connection (so its own backend), in the exported snapshot."""

    def __init__(self, work: _ColumnWork, snapshot: str) -> None:
        super().__init__(name="audit-verify-columns", daemon=True)
        self.work = work
        self.snapshot = snapshot
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(queries.READ_ONLY_REPEATABLE)
                cursor.execute(queries.snapshot_set(self.snapshot))
                self.work.run(cursor)
        except BaseException as exc:  # handed to the main thread, which raises it
            self.error = exc
        finally:
            connection.close()

    def finish(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


# --- the chain, streamed --------------------------------------------------------------------------------------


def _final_checks(
    report: VerifyReport,
    state: AuditChainState | None,
    size: int,
    last_seq: int,
    last: bytes,
    nodes: list[bytes | None],
) -> None:
    """The sequencer's state and the stored Merkle nodes against what was recomputed."""
    problems = report.problems
    state_size = state.size if state is not None else 0
    if last_seq < state_size:
        problems.append(
            Problem(last_seq + 1, "missing", f"the sequencer recorded {state_size} events, the last is seq {last_seq}")
        )
    elif last_seq > state_size:
        with connection.cursor() as cursor:  # where the rows beyond the recorded size begin (however far)
            cursor.execute(queries.SEQ_FIRST_AFTER, [state_size])
            beyond = cursor.fetchone()[0] or state_size + 1
        problems.append(
            Problem(
                beyond,
                "inserted",
                f"seq {beyond} is beyond the {state_size} events the sequencer recorded (the last is seq {last_seq})",
            )
        )
    if problems or state is None or not size:
        return  # the nodes and the frontier only mean something once the events are right
    if bytes(state.last_hash) != last:
        problems.append(Problem(size, "modified", "the sequencer's last hash is not the last event's"))
    frontier = {str(level): node.hex() for level, node in enumerate(nodes) if node is not None}
    if state.frontier != frontier:
        problems.append(Problem(size, "modified", "the sequencer's Merkle frontier differs from the recomputed one"))
    wanted = {(level, (size >> level) - 1): node for level, node in enumerate(nodes) if node is not None}
    stored = node_lookup(set(wanted))
    for (level, index), node in sorted(wanted.items()):
        if stored.get((level, index)) != node:
            end = (index + 1) << level
            problems.append(
                Problem(
                    end,
                    "modified",
                    f"stored Merkle node level {level}, index {index} (seqs {end - (1 << level) + 1}-{end}) is "
                    f"{'absent' if (level, index) not in stored else 'not the recomputed one'}",
                )
            )


def _heads_beyond(heads: Heads, rows: int, last_seq: int, state_size: int, problems: list[Problem]) -> None:
    """Heads for more events than the table holds (never compared): correctly signed, they say events are gone."""
    for size, copies in heads.items():
        if size <= rows:
            continue
        in_db = any(where != "file" for where, _, _ in copies)
        if not (in_db or size <= state_size):
            continue  # a head in the file only, maybe signed after the snapshot
        if all(valid for _, _, valid in copies):
            problems.append(
                Problem(
                    last_seq + 1 if last_seq < size else size,
                    "missing",
                    f"the signed head at tree size {size} covers {size} events, the table holds {rows}",
                )
            )
        else:  # its bad signature is reported already
            problems.append(Problem(size, "forged head", f"head at tree size {size} is beyond the log ({last_seq})"))


# --- the archived prefix ----------------------------------------------------------------------------------


def _archived_start(
    archives: list[AuditArchive], heads: Heads, problems: list[Problem]
) -> tuple[int, bytes, list[bytes | None]]:
    """Where the live log starts: after the last archive, at its covering head's last hash and frontier.

    The archives must follow each other from seq 1, each end at a signed head whose hashes it recorded, and
    the stored Merkle frontier at the last one must hash to that head's signed root.
    """
    if not archives:
        return 0, ZERO_HASH, []
    expected = 1
    for archive in archives:
        if archive.first_seq != expected:
            problems.append(
                Problem(expected, "missing", f"archives jump from seq {expected - 1} to {archive.first_seq}")
            )
        expected = archive.last_seq + 1
        copies = [(where, head) for where, head, valid in heads.get(archive.last_seq, []) if valid]
        if not copies:
            problems.append(
                Problem(
                    archive.last_seq,
                    "head missing",
                    f"no validly signed head covers the archive ending at seq {archive.last_seq}",
                )
            )
        elif any(
            head["root_hash"] != archive.head_root_hash or head["last_hash"] != archive.head_last_hash
            for _, head in copies
        ):
            problems.append(
                Problem(
                    archive.last_seq,
                    "forged head",
                    f"the archive ending at seq {archive.last_seq} recorded other hashes than its signed head",
                )
            )
    start = archives[-1].last_seq
    if not _vouched(archives[-1]):
        problems.append(
            Problem(
                start,
                "inserted",
                f"the archive of seqs {archives[-1].first_seq}-{start} has no matching "
                "audit.log.archived event (chained or on its way): it was not recorded by audit_archive",
            )
        )
    last_hash = bytes.fromhex(archives[-1].head_last_hash)
    wanted = {(level, (start >> level) - 1): level for level in range(start.bit_length()) if start >> level & 1}
    stored = node_lookup(set(wanted))
    frontier: list[bytes | None] = [None] * start.bit_length()
    for key, level in wanted.items():
        frontier[level] = stored.get(key)
    if any(frontier[level] is None for level in wanted.values()) or (
        nodes_root(frontier).hex() != archives[-1].head_root_hash
    ):
        problems.append(
            Problem(
                start,
                "modified",
                f"the stored Merkle frontier at the archived prefix (seq {start}) does not "
                "hash to its signed head's root",
            )
        )
    return start, last_hash, frontier


def _vouched(archive: AuditArchive) -> bool:
    """Is ``archive`` the one ``audit_archive`` recorded? Its ``audit.log.archived`` event (written in the same
    transaction) must be chained after it, or still in the portal's outbox on its way to the chain."""
    from services.kit.models import OutboxEvent

    facts = {"file_sha256": archive.file_sha256, "head_root_hash": archive.head_root_hash}
    chained = AuditEvent.objects.filter(
        action="audit.log.archived",
        object_id=f"{archive.first_seq}-{archive.last_seq}",
        seq__gt=archive.last_seq,
        metadata__contains=facts,
    )
    if chained.exists():
        return True
    return OutboxEvent.objects.filter(
        payload__action="audit.log.archived",
        payload__object__id=f"{archive.first_seq}-{archive.last_seq}",
        payload__metadata__contains=facts,
    ).exists()


def _archive_files(archives: list[AuditArchive], directory: Path | None, problems: list[Problem]) -> None:
    """Each archive file (at its recorded path, or by name in ``directory``): digest and full standalone check."""
    from portal.audit.standalone_verifier import check_archives

    paths: list[Path] = []
    for archive in archives:
        path = Path(archive.path) if directory is None else directory / Path(archive.path).name
        if not path.exists():
            problems.append(Problem(archive.first_seq, "missing", f"archive file {path} is not there"))
            continue
        if archive_sha256(path) != archive.file_sha256:
            problems.append(Problem(archive.first_seq, "modified", f"archive file {path} is not the one written"))
            continue
        paths.append(path)
    for check in check_archives(paths, trusted_public_keys(), unknown=UNKNOWN_KEY):
        problems.extend(
            Problem(check.first_seq or 1, "modified", f"archive {check.path.name}: {p}") for p in check.problems
        )


def archive_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


PARALLEL_MIN_EVENTS = 100_000  # from this many live events on, two processes stream one half each


def _conninfo() -> dict[str, Any]:
    """This connection's libpq parameters, for a connection in another process."""
    skip = {"cursor_factory", "context", "prepare_threshold", "server_side_binding", "assume_role", "pool"}
    return {k: v for k, v in connection.get_connection_params().items() if k not in skip and isinstance(v, str | int)}


def _trimmed(nodes: list[bytes | None]) -> list[bytes | None]:
    out = list(nodes)
    while out and out[-1] is None:
        out.pop()
    return out


def _stream_halves(
    snapshot: str,
    start: int,
    start_hash: bytes,
    frontier: list[bytes | None],
    high: int,
    heads: Heads,
    seals: Seals,
    state_size: int,
    clock: Clock,
) -> tuple[int, bytes, list[bytes | None], int] | None:
    """Stream the two halves of the live log at once, this process and another; None: stream it whole.

    The second half starts from what the database claims at the midpoint (its row's chain hash, the Merkle
    nodes stored along the frontier there). The result stands only if the first half, recomputed from the
    true start, ends exactly on those claims and neither half found anything wrong: the sequential stream
    would then have computed exactly the same. Anything else (a problem anywhere, a claim that does not
    hold, the other process failing) returns None and the caller streams the whole log in one pass, which
    also says precisely what is wrong.
    """
    mid = start + (high - start) // 2
    with connection.cursor() as cursor:
        # (a time no datetime holds, out of range anyway, is no claim to start from)
        cursor.execute(queries.EVENT_CLAIMS_AT, [mid])
        row = cursor.fetchone()
    wanted = {(level, (mid >> level) - 1) for level in range(mid.bit_length()) if mid >> level & 1}
    found = node_lookup(wanted)
    if row is None or row[1] is None or len(found) != len(wanted):
        return None
    claimed_prev, claimed_recorded = bytes(row[0]), micros(row[1])
    claimed_frontier = [found.get((level, (mid >> level) - 1)) for level in range(mid.bit_length())]
    if multiprocessing.current_process().daemon:  # a daemonic process (a Celery pool worker) may not fork
        return None
    try:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    except (OSError, ValueError):
        return None
    with pool:
        future = pool.submit(
            stream_part,
            _conninfo(),
            snapshot,
            mid,
            NO_END,
            claimed_prev,
            claimed_frontier,
            heads,
            seals.spans,
            state_size,
            Clock(clock.latest, claimed_recorded, clock.signed),
        )
        left_problems: list[Problem] = []
        left_seals = Seals(seals.spans)
        left_clock = Clock(clock.latest, clock.last_recorded, clock.signed)
        with connection.connection.cursor() as cursor, cursor.copy(queries.STREAM_COPY, [start, mid]) as copy:
            copy.set_types(STREAM_TYPES)
            chain = Chain(left_problems, state_size, start, start_hash)
            size, last, nodes = stream_rows(copy.rows(), chain, heads, left_seals, start, frontier, left_clock)
        try:
            right = future.result()
        except Exception:
            return None
    if (
        left_problems
        or right["problems"]
        or size != mid
        or last != claimed_prev
        or left_clock.last_recorded != claimed_recorded
        or _trimmed(nodes) != _trimmed(claimed_frontier)
    ):
        return None
    clock.last_recorded = right["recorded"]
    seals.unsealed = left_seals.unsealed + right["unsealed"]
    return right["size"], right["last"], right["nodes"], right["expected"]


def verify_log(
    *, archive_files: bool = False, archive_dir: Path | None = None, all_columns: bool = False
) -> VerifyReport:
    """Verify everything; never raises for a bad log (the report says what is wrong).

    After archival the live log is verified from the last archive's signed head on (see
    :func:`_archived_start`); ``archive_files`` also checks every archive file (found at its recorded path
    or, with ``archive_dir``, by name there) with the standalone verifier.

    Run outside a transaction (the management command), it reads one REPEATABLE READ snapshot, shared with
    the second connection that checks the columns in parallel. Inside a transaction (a test), it reads
    what that transaction sees and does the column check after the stream, on the same connection.

    The column check compares rows with their JSON field by field where no seal vouches for them (see
    :mod:`portal.audit.seal`), or everywhere with ``all_columns``.
    """
    began = time.perf_counter()
    report = VerifyReport()
    problems = report.problems
    own_transaction = not connection.in_atomic_block
    checker: _ColumnChecker | None = None
    with transaction.atomic():
        with connection.cursor() as cursor:
            if own_transaction:
                cursor.execute(queries.READ_ONLY_REPEATABLE)
            # The column check starts after the archived prefix (rows of it not yet deleted are not live).
            cursor.execute(queries.LIVE_BOUNDS)
            low, high = cursor.fetchone()
            seals, forged = seals_load(cursor, low - 1, use=not all_columns)
            for first_seq, last_seq in forged:
                problems.append(
                    Problem(first_seq, "forged seal", f"the seal of seqs {first_seq}-{last_seq} does not verify")
                )
            work = _ColumnWork(seals.uncovered(low, high))
            snapshot = None
            if own_transaction:
                cursor.execute(queries.SNAPSHOT_EXPORT)
                snapshot = cursor.fetchone()[0]
                if _SNAPSHOT_ID.match(snapshot):
                    checker = _ColumnChecker(work, snapshot)
                    checker.start()
                else:
                    snapshot = None
        try:
            # (updated_at is not needed, and a forged one may be a time no datetime holds)
            state = AuditChainState.objects.filter(id=1).only("size", "last_hash", "frontier").first()
            state_size = state.size if state is not None else 0
            heads = _heads_check(state_size, problems)
            report.heads = len(heads)
            archives = list(AuditArchive.objects.order_by("first_seq"))
            start, start_hash, frontier = _archived_start(archives, heads, problems)
            if archive_files:
                _archive_files(archives, archive_dir, problems)
            chain = Chain(problems, state_size, start, start_hash)
            clock = Clock.of(heads, now=timezone.now())
            with connection.cursor() as cursor:
                cursor.execute(queries.ORDERED_SCAN)  # this transaction only
                cursor.execute(queries.SEQS_BELOW_ONE)
                for (seq,) in cursor.fetchall():
                    problems.append(Problem(seq, "out of range", f"seq {seq} is below 1, where the log begins"))
            halves = None
            if snapshot is not None and high - start >= PARALLEL_MIN_EVENTS:
                halves = _stream_halves(snapshot, start, start_hash, frontier, high, heads, seals, state_size, clock)
            if halves is not None:
                size, last, nodes, chain.expected = halves
            else:
                # COPY in binary: psycopg decodes its rows in C, about twice as fast as a named cursor's fetches.
                with (
                    connection.connection.cursor() as cursor,
                    cursor.copy(queries.STREAM_COPY, [start, NO_END]) as copy,
                ):
                    copy.set_types(STREAM_TYPES)
                    size, last, nodes = stream_rows(copy.rows(), chain, heads, seals, start, frontier, clock)
            work.add(seals.unsealed)
        except BaseException:
            work.cancel()  # the other connection stops after its current chunk
            raise
        report.events = size - start
        report.archived = start
        last_seq = chain.expected - 1
        _heads_beyond(heads, size, last_seq, state_size, problems)
        with connection.cursor() as cursor:
            _service_sequences(cursor, archived=bool(start), report=report)
            work.run(cursor)  # what the other connection has not yet taken
        if checker is not None:
            checker.finish()
        report.columns_compared = work.compared
        seen = {(p.seq, p.reason) for p in problems}
        for seq, embedded, others_agree in work.result():
            if (seq, "modified") in seen or (others_agree and embedded is not None and chain.renumbered(seq, embedded)):
                continue  # already reported, or renumbered (and reported where the renumbering starts)
            what = "its columns disagree with" if not others_agree else f"its seq column is not the {embedded} in"
            problems.append(Problem(seq, "modified", f"seq {seq}: {what} its canonical JSON"))
        _final_checks(report, state, size, last_seq, last, nodes)
    report.seconds = time.perf_counter() - began
    return report
