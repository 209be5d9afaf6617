"""The hot loop of audit verification, free of Django so that a second process can run it on half the log.

:func:`stream_rows` checks rows in ``seq`` order: each row's chain hash and Merkle leaf, the link to the
previous row, the Merkle right frontier and, at each signed head's size, the recomputed root; and whether
the row is still the version its seal vouches for. :class:`Chain` says what is wrong with a row that fails.
:func:`stream_part` runs it on one range of the log in its own connection, in an exported snapshot.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from portal.audit import queries
from portal.audit.standalone_verifier import (
    CLOCK_SKEW_SECONDS,
    EPOCH,
    EVENT_MAX_BYTES,
    ZERO_HASH,
    chain_hash,
    isoformat_utc,
    parse_timestamp,
)

# The rows come from ``queries.STREAM_COPY``. Its two timestamps come as PostgreSQL sends a timestamptz in binary:
# microseconds since 2000-01-01 UTC, read as plain integers (no datetime built per row; 'infinity' is the largest
# integer). The search columns are checked against the hashed JSON (sealed rows: by their seal), so bounds on them
# are bounds on the JSON.
STREAM_TYPES = ["int8", "bytea", "bytea", "bytea", "bytea", "int8", "int8", "int8"]
PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
SKEW_MICROS = CLOCK_SKEW_SECONDS * 1_000_000
OUT_OF_RANGE_MAX = 100  # out-of-range rows reported per stream (the lowest seqs; the chain goes on being checked)
assert EPOCH == PG_EPOCH  # "not before EPOCH" is "not negative" below


def micros(moment: dt.datetime) -> int:
    """``moment`` as PostgreSQL's binary timestamptz: microseconds since 2000-01-01 UTC."""
    return (moment - PG_EPOCH) // dt.timedelta(microseconds=1)


def from_micros(value: int) -> str:
    """A binary timestamptz for a message (beyond what a datetime holds: said so)."""
    try:
        return isoformat_utc(PG_EPOCH + dt.timedelta(microseconds=value))
    except OverflowError:
        return "infinity" if value > 0 else "-infinity"


NO_END = 2**63 - 1


@dataclass
class Problem:
    """One thing wrong with the log, at ``seq`` (a head's problems: at its tree size)."""

    seq: int
    reason: str
    detail: str


Heads = dict[int, list[tuple[str, dict[str, Any], bool]]]  # tree size → (where, head, signature valid)


@dataclass
class Clock:
    """What the stream holds each row's timestamps to (microseconds since 2000-01-01 UTC, see :func:`micros`).

    ``recorded_at`` never goes back from one row to the next (the sequencer stamps batches under its lock, never
    earlier than the batch before), is not later than ``latest`` (the verification's start, plus the skew another
    portal host's clock may have), and no row is recorded after a head covering it was signed; ``occurred_at``
    is not before 2000, nor later than the row's ``recorded_at`` plus ``CLOCK_SKEW_SECONDS``.
    """

    latest: int
    last_recorded: int = -1  # the previous row's (in range), -1: none yet
    signed: dict[int, int] = field(default_factory=dict)  # tree size → its head's timestamp (the earliest copy)
    reported: int = 0

    def bound(self, head: int | None) -> int:
        """The latest ``recorded_at`` a row may have when ``head`` is the first signed head covering it."""
        return self.latest if head is None else min(self.latest, self.signed[head] + SKEW_MICROS)

    @classmethod
    def of(cls, heads: Heads, *, now: dt.datetime, last_recorded: int = -1) -> Clock:
        signed: dict[int, int] = {}
        for size, copies in heads.items():
            times = [parse_timestamp(head.get("timestamp")) for _, head, valid in copies if valid]
            known = [micros(moment) for moment in times if moment is not None]
            if known:
                signed[size] = min(known)
        return cls(latest=micros(now) + SKEW_MICROS, last_recorded=last_recorded, signed=signed)


@dataclass
class Seals:
    """The valid seals from ``low`` on, walked in step with the verification's stream.

    :meth:`at` is called only when a row is past the current seal or has another ``xmin``; it moves on and
    records rows no valid seal vouches for in ``unsealed`` (ranges of seqs), to be compared field by field.
    """

    spans: list[tuple[int, int, int]]  # (first_seq, last_seq, row_xmin), in order, MACs checked
    unsealed: list[list[int]] = field(default_factory=list)
    index: int = 0

    def uncovered(self, low: int, high: int) -> list[tuple[int, int]]:
        """Ranges of [low, high] no seal covers."""
        out: list[tuple[int, int]] = []
        at = low
        for first_seq, last_seq, _ in self.spans:
            if last_seq < at:
                continue
            if first_seq > high:
                break
            if first_seq > at:
                out.append((at, first_seq - 1))
            at = max(at, last_seq + 1)
        if at <= high:
            out.append((at, high))
        return out

    def at(self, seq: int, xmin: int) -> tuple[int, int]:
        """The (last seq, xmin) of the seal that vouches for rows from ``seq`` on; (seq, -1) if none does.

        Rows with no seal at all are already in :meth:`uncovered`; a covered row with another ``xmin`` is
        added to ``unsealed`` here.
        """
        spans = self.spans
        while self.index < len(spans) and spans[self.index][1] < seq:
            self.index += 1
        if self.index < len(spans) and spans[self.index][0] <= seq:
            _, last_seq, row_xmin = spans[self.index]
            if xmin != row_xmin:
                self._unseal(seq)
            return last_seq, row_xmin
        return seq, -1

    def _unseal(self, seq: int) -> None:
        if self.unsealed and self.unsealed[-1][1] == seq - 1:
            self.unsealed[-1][1] = seq
        else:
            self.unsealed.append([seq, seq])


def _embedded_seq(data: bytes) -> int | None:
    """The ``seq`` inside a canonical JSON (slow path only), None if it has none (or is too big to be an event:
    reported as out of range, never parsed)."""
    if len(data) > EVENT_MAX_BYTES:
        return None
    try:
        value = json.loads(data).get("seq")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Chain:
    """The streaming state: the previous two hashes, the Merkle frontier, and the anomaly classifier."""

    def __init__(self, problems: list[Problem], state_size: int, start: int = 0, prev: bytes = ZERO_HASH) -> None:
        self.problems = problems
        self.state_size = state_size
        self.first = start + 1  # the first live seq (after the archived prefix, if any)
        self.prev = prev
        self.prev2 = b"" if start else ZERO_HASH  # the archived row before the last is not known
        self.expected = start + 1  # the next seq
        self.offset = 0  # the previous row's (seq in its JSON) - (its seq column)
        self.offsets: list[tuple[int, int]] = [(start + 1, 0)]  # (from seq, offset): where renumbering was found
        self.pending: int | None = None  # a row that does not link to its predecessor, until its successor says why

    def report(self, seq: int, reason: str, detail: str) -> None:
        self.problems.append(Problem(seq, reason, detail))

    def renumbered(self, seq: int, embedded: int) -> bool:
        """Did the stream find (and report) that the row at ``seq`` was chained as ``embedded``?"""
        offset = self.offsets[bisect.bisect_right(self.offsets, (seq, float("inf"))) - 1][1]
        return offset != 0 and embedded - seq == offset

    def examine(self, seq: int, data: bytes, digest: bytes, prev_hash: bytes, stored_leaf: bytes, leaf: bytes) -> None:
        """A row that failed a fast check: say what is wrong with it (or with its neighbours)."""
        if seq != self.expected:  # seq is the primary key and rows come in order: seq > expected
            # Only seqs the sequencer recorded can be missing; a row beyond them (and the jump to it, however
            # large) is reported once, as inserted, where the rows beyond the recorded size begin.
            if self.expected <= self.state_size:
                end = min(seq - 1, self.state_size)
                absent = f"seq {self.expected}" if end == self.expected else f"seqs {self.expected}-{end}"
                self.report(self.expected, "missing", f"{absent} absent: deleted (the next row is seq {seq})")
            self.pending = None
        if chain_hash(data, prev_hash) != digest or leaf != stored_leaf:
            self.report(seq, "modified", f"seq {seq}: its hashes do not match its canonical JSON")
            self.pending = None
            return
        embedded = _embedded_seq(data)
        if embedded is None:
            self.report(seq, "modified", f"seq {seq}: its canonical JSON has no seq")
            return
        offset = embedded - seq
        if offset != self.offset:
            if offset > self.offset:
                self.report(
                    seq,
                    "missing",
                    f"seq {seq} holds the event chained as seq {embedded}: {offset - self.offset} event(s) before it "
                    "were deleted and the rest renumbered",
                )
            else:
                first = seq - (self.offset - offset)
                self.report(
                    first,
                    "inserted",
                    f"seq {seq} holds the event chained as seq {embedded}: {self.offset - offset} event(s) were "
                    f"slipped in from seq {first} and the rest renumbered",
                )
            self.offset, self.pending = offset, None
            self.offsets.append((seq, offset))
            return
        if seq != self.expected or prev_hash == self.prev:
            self._resolve(linked=True, skips=False)
            return
        if self.pending is not None:
            self._resolve(linked=False, skips=prev_hash == self.prev2)
        elif prev_hash == self.prev2:
            self.report(
                seq - 1, "inserted", f"seq {seq - 1} is not in the chain: seq {seq} links past it to seq {seq - 2}"
            )
        elif seq > self.state_size:
            self.report(seq, "inserted", f"seq {seq} is beyond the {self.state_size} events the sequencer recorded")
        else:
            self.pending = seq

    def _resolve(self, *, linked: bool, skips: bool) -> None:
        """The row after a broken link tells which row is at fault."""
        broken, self.pending = self.pending, None
        if broken is None:
            return
        if broken == self.first:
            to = "the zero hash" if broken == 1 else f"the archived prefix's last hash (seq {broken - 1})"
            self.report(broken, "modified", f"seq {broken} does not link to {to}")
        elif linked:  # the successor links to the row: its predecessor's hash changed (rewritten and re-hashed)
            self.report(
                broken - 1,
                "modified",
                f"seq {broken - 1} was rewritten and re-hashed: seq {broken} links to a different hash",
            )
        elif skips:  # the successor links to the row's predecessor: the row was slipped in
            self.report(broken, "inserted", f"seq {broken} is not in the chain: seq {broken + 1} links past it")
        else:  # linked to by neither side: replaced
            self.report(
                broken, "modified", f"seq {broken} was replaced: it neither links to seq {broken - 1} nor is linked to"
            )

    def finish(self) -> None:
        """A broken link on the last row: appended behind the sequencer's back, or its predecessor re-hashed."""
        if self.pending is not None:
            broken, self.pending = self.pending, None
            if broken > self.state_size:
                self.report(broken, "inserted", f"seq {broken} is beyond the {self.state_size} events recorded")
            else:
                self.report(
                    broken - 1, "modified", f"seq {broken} (the last) links to a hash that is not seq {broken - 1}'s"
                )


def nodes_root(nodes: list[bytes | None]) -> bytes:
    """RFC 6962 root from the right frontier (lowest level first)."""
    acc: bytes | None = None
    for node in nodes:
        if node is not None:
            acc = node if acc is None else hashlib.sha256(b"\x01" + node + acc).digest()
    return acc if acc is not None else hashlib.sha256(b"").digest()


def stream_rows(
    cursor: Any,
    chain: Chain,
    heads: Heads,
    seals: Seals,
    start: int = 0,
    frontier: list[bytes | None] | None = None,
    clock: Clock | None = None,
) -> tuple[int, bytes, list[bytes | None]]:
    """The hot loop: every row's hashes, link and embedded seq; the frontier; heads at their sizes; whether
    the row is still the version its seal vouches for (``seals`` collects those that are not); whether its
    size and timestamps are within what the sequencer writes (``clock``; rows outside are reported ``out of
    range`` at once, the chain goes on being checked).

    Starts after ``start`` archived events (the chain's last hash and the tree's ``frontier`` there).
    Return the tree size reached, the last chain hash and the frontier (``nodes[level]``: a complete
    subtree root, or None).
    """
    sha256 = hashlib.sha256
    problems = chain.problems
    examine = chain.examine
    prev, prev2 = chain.prev, chain.prev2
    expected = start + 1
    nodes: list[bytes | None] = list(frontier or [])
    size = start
    seal_last, seal_xmin, seal_at = -1, -1, seals.at
    clock = clock or Clock(latest=2**63 - 1)
    last_recorded = clock.last_recorded
    # A row's recorded_at is bounded by the first validly signed head covering it (the stream's size when it
    # reaches the head's tree size), and by the verification's start: ``bound`` moves on at each head.
    marks = sorted(s for s in clock.signed if s > start)
    mark = 0
    bound = clock.bound(marks[0] if marks else None)
    for seq, data, digest, prev_hash, stored_leaf, xmin, occurred, recorded in cursor:
        if seq > seal_last or xmin != seal_xmin:
            seal_last, seal_xmin = seal_at(seq, xmin)
        leaf = sha256(b"\x00" + data).digest()
        if (
            seq != expected
            or prev_hash != prev
            or leaf != stored_leaf
            or sha256(data + prev_hash).digest() != digest
            or chain.pending is not None
        ):
            chain.prev, chain.prev2, chain.expected = prev, prev2, expected
            examine(seq, data, digest, prev_hash, stored_leaf, leaf)
        if (
            len(data) > EVENT_MAX_BYTES
            or not last_recorded <= recorded <= bound
            or not 0 <= occurred <= recorded + SKEW_MICROS
        ):
            clock.last_recorded = last_recorded
            _out_of_range(chain, clock, seq, len(data), occurred, recorded, marks[mark] if mark < len(marks) else None)
            last_recorded = clock.last_recorded
        else:
            last_recorded = recorded
        # Merkle: add the leaf to the right frontier, merging complete subtrees upwards.
        carry, level = leaf, 0
        while size >> level & 1:
            carry = sha256(b"\x01" + nodes[level] + carry).digest()  # type: ignore[operator]
            nodes[level] = None
            level += 1
        if level == len(nodes):
            nodes.append(carry)
        else:
            nodes[level] = carry
        size += 1
        prev2, prev = prev, digest
        expected = seq + 1
        if size in heads:
            root = nodes_root(nodes).hex()
            for where, head, _ in heads[size]:
                if root != head["root_hash"] or prev.hex() != head["last_hash"]:
                    problems.append(
                        Problem(
                            size,
                            "forged head",
                            f"the {where}'s head at tree size {size} does not match the recomputed tree",
                        )
                    )
            while mark < len(marks) and marks[mark] <= size:
                mark += 1
            bound = clock.bound(marks[mark] if mark < len(marks) else None)
    chain.prev, chain.expected = prev, expected
    clock.last_recorded = last_recorded
    chain.finish()
    return size, prev, nodes


def _out_of_range(
    chain: Chain, clock: Clock, seq: int, size: int, occurred: int, recorded: int, head: int | None
) -> None:
    """Report what is out of range about row ``seq`` (the first ``OUT_OF_RANGE_MAX`` rows; ``head``: the tree
    size of the first signed head covering it); move the clock on only with a ``recorded_at`` in range, so one
    absurd row does not make its honest successors look late."""
    bound = clock.bound(head)
    if size > EVENT_MAX_BYTES:
        why = f"its canonical JSON is {size} bytes, more than the {EVENT_MAX_BYTES} the sequencer writes"
    elif recorded < 0:
        why = f"its recorded_at {from_micros(recorded)} is before {EPOCH:%Y}"
    elif recorded > clock.latest:
        why = f"its recorded_at {from_micros(recorded)} is in the future"
    elif recorded > bound and head is not None:
        signed = from_micros(clock.signed[head])
        why = (
            f"its recorded_at {from_micros(recorded)} is after the head at tree size {head} covering it was "
            f"signed ({signed})"
        )
    elif recorded < clock.last_recorded:
        previous = from_micros(clock.last_recorded)
        why = f"its recorded_at {from_micros(recorded)} is before the previous event's ({previous})"
    elif occurred < 0:
        why = f"its occurred_at {from_micros(occurred)} is before {EPOCH:%Y}"
    else:
        why = (
            f"its occurred_at {from_micros(occurred)} is after its recorded_at {from_micros(recorded)} "
            f"(by more than the {CLOCK_SKEW_SECONDS} s a service's clock may be ahead)"
        )
    if 0 <= recorded <= bound and recorded >= clock.last_recorded:
        clock.last_recorded = recorded
    if clock.reported < OUT_OF_RANGE_MAX:
        clock.reported += 1
        chain.report(seq, "out of range", f"seq {seq}: {why}")


def stream_part(
    conninfo: dict[str, Any],
    snapshot: str,
    start: int,
    end: int,
    prev: bytes,
    frontier: list[bytes | None],
    heads: Heads,
    spans: list[tuple[int, int, int]],
    state_size: int,
    clock: Clock,
) -> dict[str, Any]:
    """Stream seqs (start, end] in ``snapshot`` on a connection of its own (run in another process)."""
    import psycopg

    problems: list[Problem] = []
    chain = Chain(problems, state_size, start, prev)
    seals = Seals(spans)
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(queries.BEGIN_READ_ONLY_REPEATABLE)
        conn.execute(queries.snapshot_set(snapshot))
        conn.execute(queries.ORDERED_SCAN)
        with conn.cursor() as cursor, cursor.copy(queries.STREAM_COPY, [start, end]) as copy:
            copy.set_types(STREAM_TYPES)
            size, last, nodes = stream_rows(copy.rows(), chain, heads, seals, start, frontier, clock)
        conn.execute(queries.COMMIT)
    return {
        "problems": problems,
        "size": size,
        "last": last,
        "nodes": nodes,
        "expected": chain.expected,
        "unsealed": seals.unsealed,
        "recorded": clock.last_recorded,
    }
