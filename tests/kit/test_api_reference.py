"""The API reference's own checks can fail: a planted undocumented operation, a planted undeclared error.

The contract tests (tests/service_contract.py) run these checks over every operation of every service; here they
meet operations built to fail them, and one real ledger view with its declaration taken away.
"""

from __future__ import annotations

import types

import pytest
from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from services.kit.raised_errors import raised_errors, undeclared_errors
from services.kit.schema import api_operation, declared_errors
from services.ledger.api.views import AccountViewSet, TransactionViewSet
from services.ledger.errors import AccountClosed, AccountFrozen, InsufficientFunds, LedgerError, Unbalanced
from tests.service_contract import schema_gaps


def _debit() -> None:
    raise InsufficientFunds("Not enough.")


def _debit_guarded() -> None:
    try:
        _debit()
    except InsufficientFunds:
        return


def _kept_then_raised(frozen: bool) -> None:
    error = AccountFrozen("Frozen.") if frozen else None
    if error is not None:
        raise error


def _retried(run: object) -> None:
    """A stand-in for a retry helper: the walker does not follow the function it is given."""


def _with_nested_run() -> None:
    def run() -> None:
        raise Unbalanced("Debits differ from credits.")

    _retried(run)


class _Documented(APIView):
    @api_operation(summary="Debit", description="Debits an account, refused without funds.", errors=[])
    def post(self, request: Request) -> Response:
        self._apply()
        return Response({})

    def _apply(self) -> None:
        _debit()


class _DocumentedWithError(_Documented):
    @api_operation(summary="Debit", description="Debits an account, refused without funds.", errors=[InsufficientFunds])
    def post(self, request: Request) -> Response:
        self._apply()
        return Response({})


class _DocumentedWithSuperclass(_Documented):
    @api_operation(summary="Debit", description="Debits an account, refused without funds.", errors=[LedgerError])
    def post(self, request: Request) -> Response:
        self._apply()
        return Response({})


class _Cases(APIView):
    def guarded(self, request: Request) -> Response:
        _debit_guarded()
        return Response({})

    def kept(self, request: Request) -> Response:
        _kept_then_raised(frozen=True)
        return Response({})

    def nested(self, request: Request) -> Response:
        _with_nested_run()
        return Response({})


def test_an_undeclared_error_raised_two_calls_deep_is_found():
    # given a view whose helper method calls a function that raises insufficient_funds, declared nowhere
    # when the check walks it
    missing = undeclared_errors(_Documented, "post")

    # then the error is reported
    assert missing == {InsufficientFunds}


def test_a_declared_error_or_its_superclass_satisfies_the_check():
    assert undeclared_errors(_DocumentedWithError, "post") == set()
    assert undeclared_errors(_DocumentedWithSuperclass, "post") == set()


def test_an_error_caught_on_the_way_does_not_escape():
    assert raised_errors(_Cases, "guarded") == set()


def test_an_error_made_then_raised_from_a_variable_and_one_in_a_nested_function_are_found():
    assert raised_errors(_Cases, "kept") == {AccountFrozen}
    assert raised_errors(_Cases, "nested") == {Unbalanced}


def test_a_real_view_with_its_declaration_taken_away_fails_the_check():
    # given the ledger's account update, which declares account_closed and account_not_empty (and passes)
    real = AccountViewSet.partial_update
    assert {AccountClosed} <= set(declared_errors(real))
    assert undeclared_errors(AccountViewSet, "partial_update") == set()

    # when the same code is planted in a view without the declaration
    code = real.__wrapped__ if hasattr(real, "__wrapped__") else real
    planted = types.FunctionType(code.__code__, code.__globals__, code.__name__, code.__defaults__, code.__closure__)
    planted.__qualname__ = code.__qualname__
    planted_view = type(
        "PlantedAccountViewSet", (AccountViewSet,), {"partial_update": planted, "__module__": AccountViewSet.__module__}
    )

    # then the check names every error it can raise
    assert {e.code for e in undeclared_errors(planted_view, "partial_update")} == {
        "not_found",
        "account_closed",
        "account_not_empty",
    }


def test_the_ledger_create_declares_the_refusals_its_service_raises():
    # the single create reaches the bulk path, which keeps errors per item and raises the item's (raise result.error)
    raised = {e.code for e in raised_errors(TransactionViewSet, "create")}

    assert {"insufficient_funds", "unbalanced", "reference_conflict", "account_frozen"} <= raised
    assert undeclared_errors(TransactionViewSet, "create") == set()


class _Undocumented(APIView):
    def post(self, request: Request) -> Response:
        """Debits an account (a developer's note: see _debit)."""
        return Response({})


class _WithoutExamples(APIView):
    @api_operation(
        summary="Debit",
        description="Debits an account, refused without funds.",
        request=None,
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        return Response({})


class _DebitSerializer(serializers.Serializer):
    """Internal: built by the developer's helper (not for integrators)."""

    ok = serializers.BooleanField()
    note = serializers.SerializerMethodField()

    def get_note(self, obj: object) -> str:
        """The developer's note on how the note is made."""
        return ""


class _Complete(APIView):
    @api_operation(
        summary="Debit",
        description="Debits an account, refused without funds.",
        examples=[OpenApiExample("Debited", value={"ok": True, "note": ""}, response_only=True)],
        request=None,
        responses={200: _DebitSerializer},
    )
    def post(self, request: Request) -> Response:
        return Response({})


def _schema(view: type[APIView]) -> dict:
    generator = SchemaGenerator(patterns=[path("api/v1/planted", view.as_view())])
    return generator.get_schema(request=None, public=True)


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (_Undocumented, {"POST /api/v1/planted: no summary", "POST /api/v1/planted: no description"}),
        (_WithoutExamples, {"POST /api/v1/planted: no 200 application/json example"}),
        (_Complete, set()),
    ],
)
def test_the_completeness_check_names_what_an_operation_lacks(view, expected):
    # given a schema holding one planted operation
    schema = _schema(view)

    # then the check finds exactly what it lacks, and the developer's docstring is not its description
    assert set(schema_gaps(schema)) == expected
    assert "developer" not in str(schema)


class _StaleExample(APIView):
    @api_operation(
        summary="Debit",
        description="Debits an account, refused without funds.",
        examples=[OpenApiExample("Debited", value={"ok": "yes", "note": ""}, response_only=True)],
        request=None,
        responses={200: _DebitSerializer},
    )
    def post(self, request: Request) -> Response:
        return Response({})


def test_an_example_its_schema_refuses_is_a_gap():
    # given an operation whose example says "yes" where its schema says boolean (an example gone stale)
    gaps = schema_gaps(_schema(_StaleExample))

    # then the check names the example and where it is wrong
    assert len(gaps) == 1
    assert gaps[0].startswith("POST /api/v1/planted 200: example 'Debited' does not match its schema at /ok:"), gaps


class _Ref(serializers.Serializer):
    id = serializers.CharField()


class _WithOptionalRef(serializers.Serializer):
    parent = _Ref(allow_null=True)


class _NullableRef(APIView):
    @api_operation(
        summary="Get",
        description="Reads something with an optional parent.",
        examples=[OpenApiExample("No parent", value={"parent": None}, response_only=True)],
        request=None,
        responses={200: _WithOptionalRef},
    )
    def get(self, request: Request) -> Response:
        return Response({"parent": None})


def test_a_nullable_component_field_lets_null_through():
    # given a field whose type is a component and that may be null (drf-spectacular: allOf + nullable, which
    # lets no null through under OpenAPI 3.0.3)
    schema = _schema(_NullableRef)

    # then the reference says "the component or null", and an answer with null matches it
    parent = schema["components"]["schemas"]["_WithOptionalRef"]["properties"]["parent"]
    assert parent["oneOf"] == [{"$ref": "#/components/schemas/_Ref"}, {"enum": [None]}]
    assert schema_gaps(schema) == []
