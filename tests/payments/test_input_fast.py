"""The create request's fast validation accepts exactly what the serializer accepts unchanged, and defers the
rest to it (which then reports the errors)."""

from __future__ import annotations

import pytest

from services.payments.api.serializers import PaymentCreateSerializer, create_input_fast

BASE = {"amount": 100, "currency": "EUR", "source_account": "acc_a", "destination_account": "acc_b"}


@pytest.mark.parametrize(
    "raw",
    [
        BASE,
        {**BASE, "description": "rent", "metadata": {"order": {"id": 7}, "n": None}},
        {**BASE, "description": "", "metadata": {}},
        {**BASE, "description": "loyer é ✓"},
        {**BASE, "amount": "12", "currency": 5},  # the service checks these, not the serializer
        {**BASE, "metadata": {f"k{i}": i for i in range(50)}},
        {**BASE, "metadata": {f"k{i}": i for i in range(51)}},  # the service checks the limits (422)
    ],
)
def test_fast_path_matches_the_serializer_on_well_formed_input(raw):
    serializer = PaymentCreateSerializer(data=raw)
    assert serializer.is_valid(), serializer.errors

    assert create_input_fast(raw) == dict(serializer.validated_data)


@pytest.mark.parametrize(
    "raw",
    [
        {**BASE, "source_account": " acc_a"},  # the serializer would trim it
        {**BASE, "destination_account": ""},
        {**BASE, "destination_account": 7},
        {**BASE, "source_account": "a" * 41},
        {**BASE, "description": "x" * 501},
        {**BASE, "description": None},
        {**BASE, "description": "nul \x00"},
        {**BASE, "metadata": []},
        {**BASE, "surprise": 1},
        {k: v for k, v in BASE.items() if k != "currency"},
        ["not", "an", "object"],
    ],
)
def test_fast_path_defers_anything_unusual_to_the_serializer(raw):
    assert create_input_fast(raw) is None
