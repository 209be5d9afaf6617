"""The fast input path accepts exactly what the serializer accepts unchanged, and defers the rest."""

from __future__ import annotations

import pytest

from services.ledger.api.serializers import (
    BatchItemInputSerializer,
    TransactionInputSerializer,
    transaction_input,
    transaction_input_fast,
)

LEGS = [
    {"account": "acc_a", "direction": "debit", "amount": 5},
    {"account": "acc_b", "direction": "credit", "amount": 5},
]


@pytest.mark.parametrize(
    "raw",
    [
        {"reference": "r1", "postings": LEGS},
        {"reference": "r2", "postings": LEGS, "pending": True, "description": "rent", "metadata": {"k": [1]}},
        {"reference": "r3", "postings": LEGS, "currency": "EUR", "description": ""},
        {"reference": "r4", "postings": [{"account": "acc_a", "direction": "debit", "amount": "5"}, LEGS[1]]},
        {"reference": "r5", "postings": []},
        {"reference": "r6", "postings": LEGS, "pending": True, "expires_at": "2030-01-01T00:00:00Z"},
        {"reference": "r7", "postings": LEGS, "pending": True, "expires_at": "2030-01-01T12:30:00.123456+02:00"},
    ],
)
def test_fast_path_matches_the_serializer_on_well_formed_input(raw):
    # given input the serializer accepts
    serializer = TransactionInputSerializer(data=raw)
    assert serializer.is_valid(), serializer.errors

    # then the fast path yields the very same transaction input
    assert transaction_input_fast(raw) == transaction_input(serializer.validated_data)
    # and the same content hash (a replay through the other path is recognised as the same transaction)
    assert transaction_input_fast(raw).content_hash() == transaction_input(serializer.validated_data).content_hash()


@pytest.mark.parametrize(
    "raw",
    [
        {"reference": " r1", "postings": LEGS},  # the serializer would trim it
        {"reference": "", "postings": LEGS},
        {"reference": 7, "postings": LEGS},
        {"reference": "r", "postings": LEGS, "pending": "true"},
        {"reference": "r", "postings": LEGS, "currency": "eur"},
        {"reference": "r", "postings": LEGS, "currency": None},
        {"reference": "r", "postings": LEGS, "expires_at": "2030-01-01T00:00:00"},  # no offset
        {"reference": "r", "postings": LEGS, "expires_at": "2030-01-01"},
        {"reference": "r", "postings": LEGS, "expires_at": 1893456000},
        {"reference": "r", "postings": LEGS, "surprise": 1},
        {"reference": "r", "postings": [{"account": "acc_a", "direction": "up", "amount": 5}]},
        {
            "reference": "r",
            "postings": [{"account": "acc_a", "direction": {}, "amount": 5}],
        },  # unhashable
        {"reference": "r", "postings": [{"account": "acc_a", "direction": ["debit"], "amount": 5}]},
        {"reference": "r", "postings": LEGS, "expires_at": "0001-01-01T00:00:00+01:00"},  # overflows in UTC
        {"reference": "r", "postings": [{"account": "acc_a", "direction": "debit"}]},
        {"reference": "r", "postings": "nope"},
        {"reference": "r" * 201, "postings": LEGS},
        ["not", "an", "object"],
    ],
)
def test_fast_path_defers_anything_unusual_to_the_serializer(raw):
    assert transaction_input_fast(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        {"reference": "b1", "postings": LEGS, "request_id": "req_0123abcd"},
        {"reference": "b2", "postings": LEGS, "request_id": "A.b_c:d-" + "9" * 120},
        {"reference": "b3", "postings": LEGS},
    ],
)
def test_fast_path_matches_the_serializer_on_batch_items_with_their_request_id(raw):
    serializer = BatchItemInputSerializer(data=raw)
    assert serializer.is_valid(), serializer.errors

    fast = transaction_input_fast(raw, batch_item=True)

    assert fast == transaction_input(serializer.validated_data)
    assert fast.request_id == raw.get("request_id", "")
    # the request id is not the transaction's content: the same item under another request is a replay
    assert (
        fast.content_hash()
        == transaction_input_fast({**raw, "request_id": "req-other"}, batch_item=True).content_hash()
    )


@pytest.mark.parametrize(
    "request_id", ["", " req", "req\n", "a b", "x" * 129, "ünï", 7, None, True, ["req"], {"req": 1}]
)
def test_fast_path_defers_an_invalid_request_id_to_the_serializer_which_refuses_it(request_id):
    raw = {"reference": "r", "postings": LEGS, "request_id": request_id}

    assert transaction_input_fast(raw, batch_item=True) is None
    serializer = BatchItemInputSerializer(data=raw)
    assert not serializer.is_valid()
    assert list(serializer.errors) == ["request_id"]


def test_a_single_transaction_takes_no_request_id_in_its_body():
    raw = {"reference": "r", "postings": LEGS, "request_id": "req-1"}

    assert transaction_input_fast(raw) is None
    serializer = TransactionInputSerializer(data=raw)
    assert not serializer.is_valid()
    assert list(serializer.errors) == ["request_id"]
