"""The kit's one way for a batch to isolate its items (services/kit/batches.py)."""

from __future__ import annotations

import math

import pytest

from services.kit.batches import batch_isolate


class Poisoned(Exception):
    pass


class Away(Exception):
    pass


def runner(poisoned: set[int], calls: list[int]):
    def run(part):
        calls.append(len(part))
        if poisoned & set(part):
            raise Poisoned(sorted(poisoned & set(part)))
        return [("done", n) for n in part]

    return run


@pytest.mark.parametrize(
    ("size", "poisoned"),
    [(200, {0}), (200, {199}), (200, {57}), (200, {3, 150}), (200, {10, 11, 12}), (1, {0}), (7, {6})],
)
def test_every_item_but_the_poisoned_ones_is_done_in_order_with_a_bounded_number_of_runs(size, poisoned):
    calls: list[int] = []
    results = batch_isolate(
        list(range(size)),
        runner(poisoned, calls),
        item_error=lambda exc: isinstance(exc, Poisoned),
        alone=lambda item, exc: [("failed", item)],
        merge=lambda left, right: left + right,
    )

    assert results == [("failed" if n in poisoned else "done", n) for n in range(size)]
    # each poisoned item costs at most two runs per level of halving (its half, and the half beside it)
    assert len(calls) <= 1 + len(poisoned) * 2 * math.ceil(math.log2(max(size, 2)))


def test_an_error_that_is_no_items_fault_is_raised_as_it_is_without_splitting():
    calls: list[int] = []

    def run(part):
        calls.append(len(part))
        raise Away("the database is away")

    with pytest.raises(Away):
        batch_isolate(
            list(range(50)),
            run,
            item_error=lambda exc: not isinstance(exc, Away),
            alone=lambda item, exc: [],
            merge=lambda left, right: left + right,
        )
    assert calls == [50]


def test_the_item_alone_gets_its_own_error():
    seen: list[tuple[int, str]] = []
    batch_isolate(
        [1, 2, 3, 4],
        runner({3}, []),
        item_error=lambda exc: True,
        alone=lambda item, exc: seen.append((item, str(exc))) or [],
        merge=lambda left, right: left + right,
    )
    assert seen == [(3, "[3]")]
