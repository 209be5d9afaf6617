"""The event-type catalog seeded by the migrations: every type's example is valid against its JSON Schema, and
the schemas list exactly the fields that payments and the ledger put in their events' data."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from services.webhooks.models import EventType, Message

REPO = Path(__file__).resolve().parents[2]
TYPES = {
    "payment.created",
    "payment.settled",
    "payment.failed",
    "payment.rejected",
    "payment.canceled",
    "ledger.transaction.posted",
    "ledger.transaction.voided",
}


def _returned_dict_keys(path: Path, function: str) -> set[str]:
    """The keys of the dict literal that ``function`` in ``path`` returns (the body the events carry)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for statement in ast.walk(node):
                if isinstance(statement, ast.Return) and isinstance(statement.value, ast.Dict):
                    return {key.value for key in statement.value.keys if isinstance(key, ast.Constant)}
    raise AssertionError(f"{function} in {path} returns no dict literal")


@pytest.mark.django_db
def test_the_seven_types_are_seeded_with_valid_schemas_and_examples() -> None:
    types = {t.name: t for t in EventType.objects.all()}
    assert TYPES <= set(types)
    for name in TYPES:
        event_type = types[name]
        assert not event_type.archived
        assert event_type.description
        Draft202012Validator.check_schema(event_type.schema)
        validator = Draft202012Validator(event_type.schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = [e.message for e in validator.iter_errors(event_type.example)]
        assert not errors, (name, errors)
        assert event_type.example["status"] == name.rsplit(".", 1)[1]
        # Another status is refused by the type's schema.
        assert not validator.is_valid({**event_type.example, "status": "pending-nothing"})


@pytest.mark.django_db
def test_schemas_name_the_fields_payments_and_the_ledger_send() -> None:
    payment = _returned_dict_keys(REPO / "services/payments/bodies.py", "payment_body")
    transaction = _returned_dict_keys(REPO / "services/ledger/bodies.py", "transaction_body")
    for event_type in EventType.objects.filter(name__in=TYPES):
        expected = payment if event_type.name.startswith("payment.") else transaction
        assert set(event_type.schema["required"]) == expected, event_type.name
        assert set(event_type.schema["properties"]) == expected, event_type.name
        assert set(event_type.example) == expected, event_type.name


@pytest.mark.django_db
def test_message_seq_is_given_by_the_database_in_creation_order() -> None:
    first = Message.objects.create(
        event_id="evt-1", type="payment.created", body="{}", occurred_at="2026-12-05T09:30:00Z", source="test"
    )
    second = Message.objects.create(
        event_id="evt-2", type="payment.created", body="{}", occurred_at="2026-12-05T09:30:00Z", source="test"
    )
    assert first.seq
    assert second.seq > first.seq
    assert first.id.startswith("msg_")
