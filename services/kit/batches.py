"""Batches that isolate their items: one item never stops the others.

A batch path (the ledger's batch endpoints, the payments drain, the job monitor, …) does many items' work in
one call or transaction. When that raises an error that may be an item's fault — not a refusal, which already
is an item's own result, and not its database or an upstream being away, which says nothing about any item —
:func:`batch_isolate` splits the batch in halves and runs each again, until the item that raises is alone; what
happens to that item (a ``processing_error`` result, retries, a park) is the caller's ``alone``.

Splitting costs about ``2 · log2(n)`` extra runs for one poisoned item among ``n``, so the others are done in
roughly the usual time; it relies on a run being safe to repeat for the items it did not finish (each run is
its own transaction, or its work is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from services.kit.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def batch_isolate(
    items: Sequence[T],
    run: Callable[[Sequence[T]], R],
    *,
    item_error: Callable[[Exception], bool],
    alone: Callable[[T, Exception], R],
    merge: Callable[[R, R], R],
    event: str = "batch.split",
) -> R:
    """``run(items)``; if it raises an error ``item_error`` accepts, the same for each half, down to single items,
    whose error goes to ``alone(item, error)``; the halves' results are combined with ``merge(left, right)``.
    Errors ``item_error`` refuses are raised as they are. ``event`` names the log line of each split."""
    try:
        return run(items)
    except Exception as exc:
        if not item_error(exc):
            raise
        failure = exc
    # (outside the except block: each half's own errors are not chained to this one)
    if not items:
        raise failure
    if len(items) == 1:
        return alone(items[0], failure)
    log.warning(event, size=len(items), error=f"{type(failure).__name__}: {failure}"[:300])
    half = len(items) // 2
    left = batch_isolate(items[:half], run, item_error=item_error, alone=alone, merge=merge, event=event)
    right = batch_isolate(items[half:], run, item_error=item_error, alone=alone, merge=merge, event=event)
    return merge(left, right)
