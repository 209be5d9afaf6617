"""Prefixed ids: ``<prefix>_`` + 26 Crockford base32 characters, sortable by creation time."""

from __future__ import annotations

import re
import time

import pytest

from services.kit.ids import ID_PATTERN, _encode_130, id_is_valid, id_new


def test_new_id_has_the_prefix_and_26_crockford_characters():
    # when an id is made
    value = id_new("acc")

    # then it is the prefix, an underscore and 26 characters without i, l, o, u
    assert re.fullmatch(r"acc_[0-9a-hjkmnp-tv-z]{26}", value)
    assert re.fullmatch(ID_PATTERN, value)
    assert id_is_valid(value)
    assert id_is_valid(value, "acc")


def test_ids_made_later_sort_after_earlier_ones():
    # given ids made a few milliseconds apart
    values = []
    for _ in range(5):
        values.append(id_new("txn"))
        time.sleep(0.002)

    # then their string order is their creation order
    assert sorted(values) == values
    assert len(set(values)) == 5


def test_ids_made_in_the_same_millisecond_are_distinct():
    # when many ids are made at once
    values = {id_new("txn") for _ in range(2000)}

    # then none repeats (80 random bits each)
    assert len(values) == 2000


def test_time_part_encodes_the_creation_millisecond():
    # given the clock before and after making an id
    before = time.time_ns() // 1_000_000
    value = id_new("pay")
    after = time.time_ns() // 1_000_000

    # then its first 10 characters decode to a millisecond in between
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    millis = 0
    for char in value[4:14]:
        millis = millis * 32 + alphabet.index(char)
    assert before <= millis <= after


def _reference(value: int, length: int) -> str:
    """Crockford base32, one character at a time (the generator's first, plain spelling)."""
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(alphabet[rem])
    return "".join(reversed(chars))


@pytest.mark.parametrize("seed", range(3))
def test_the_fast_encoding_is_the_plain_one(seed):
    import random

    rng = random.Random(seed)
    edges = [(0, 0), ((1 << 50) - 1, (1 << 80) - 1), (1, 1), (1 << 49, 1 << 79), (1_764_900_000_000, 0)]
    pairs = edges + [(rng.getrandbits(50), rng.getrandbits(80)) for _ in range(2000)]
    for millis, rand in pairs:
        assert _encode_130((millis << 80) | rand) == _reference(millis, 10) + _reference(rand, 16)


@pytest.mark.parametrize("prefix", ["", "a", "Acc", "ACC", "ac1", "acc_", "toolongpx", "a-c", "acc\n", "ác"])
def test_bad_prefix_raises(prefix):
    # when an id is asked for with a prefix that is not 2-8 lowercase ASCII letters
    with pytest.raises(ValueError, match="prefix"):
        id_new(prefix)


def test_id_of_another_prefix_is_not_valid_for_this_one():
    # given a client id
    value = id_new("cli")

    # then it is valid, but not as an account id
    assert id_is_valid(value, "cli")
    assert not id_is_valid(value, "acc")
    assert not id_is_valid(value, "cl")


@pytest.mark.parametrize(
    "value",
    [
        None,
        123,
        b"acc_0000000000000000000000000a",
        "",
        "acc_",
        "acc_000000000000000000000000",  # 24 characters
        "acc_00000000000000000000000000a",  # 27 characters
        "acc_0000000000000000000000000i",  # i is not Crockford
        "acc_0000000000000000000000000U",  # upper case
        "ACC_00000000000000000000000000",
        "acc-00000000000000000000000000",
        "acc_00000000000000000000000000\n",  # a trailing newline is not part of an id
        " acc_00000000000000000000000000",
    ],
)
def test_malformed_values_are_not_valid_ids(value):
    # then anything but the exact format is refused
    assert not id_is_valid(value)
    assert not id_is_valid(value, "acc")
