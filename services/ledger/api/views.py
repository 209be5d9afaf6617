"""Ledger API: parse → call a service or selector → serialize."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema_view, inline_serializer
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from services.kit.canonical_urls import id_segment
from services.kit.context import request_id_clean
from services.kit.errors import DomainError
from services.kit.pagination import IdCursor
from services.kit.schema import api_operation
from services.kit.telemetry import span_request_ids_set
from services.kit.timestamps import timestamp_parse
from services.ledger import errors, selectors
from services.ledger.api import examples
from services.ledger.api.serializers import (
    AccountCreateSerializer,
    AccountPostingSerializer,
    AccountSerializer,
    AccountUpdateSerializer,
    BalanceSerializer,
    BatchInputSerializer,
    BatchItemInputSerializer,
    BatchResultSerializer,
    SettleBatchInputSerializer,
    SettleResultSerializer,
    TransactionInputSerializer,
    TransactionSerializer,
    transaction_input,
    transaction_input_fast,
)
from services.ledger.filtersets import AccountFilterSet, PostingFilterSet, TransactionFilterSet
from services.ledger.services import accounts, bulk, settlement, transactions

_TRANSACTION_REFUSALS = (
    errors.AccountNotFound,
    errors.CurrencyMismatch,
    errors.Unbalanced,
    errors.TooFewPostings,
    errors.InvalidAmount,
    errors.InvalidCurrency,
    errors.InsufficientFunds,
    errors.AccountFrozen,
    errors.AccountClosed,
    errors.ReferenceConflict,
)


@extend_schema_view(
    list=api_operation(
        summary="List accounts",
        description="Accounts, oldest first, with their running balances. Filter by `currency`, `status` or "
        "`code`; follow `next` (a cursor) for the next page.",
        examples=[examples.account],
    ),
    retrieve=api_operation(
        summary="Get an account",
        description="An account and its balances now: posted debits and credits, amounts held by pending "
        "transactions, `balance` and `available` (all in minor units).",
        errors=[errors.AccountAbsent],
        examples=[examples.account],
    ),
)
class AccountViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Accounts with their running balances."""

    queryset = selectors.account_list()
    serializer_class = AccountSerializer
    filterset_class = AccountFilterSet
    pagination_class = IdCursor
    lookup_value_regex = "[^/]+"

    def get_object(self) -> Any:
        return selectors.account_get(account_id=self.kwargs["pk"])

    @api_operation(
        summary="Create an account",
        description="Opens an account in one currency, with a normal balance: `credit` for what the business owes "
        "(a customer's wallet), `debit` for what it owns (a bank account). Give a `code` of your own to find it "
        "again; it is unique. An account cannot go below zero unless it has an `overdraft_limit` or "
        "`allow_negative`.",
        errors=[errors.DuplicateAccountCode, errors.InvalidAmount, errors.InvalidCurrency],
        examples=[examples.account_create, examples.account_created],
        request=AccountCreateSerializer,
        responses={201: AccountSerializer},
    )
    def create(self, request: Request) -> Response:
        serializer = AccountCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = accounts.account_create(**serializer.validated_data)
        return Response(AccountSerializer(account).data, status=status.HTTP_201_CREATED)

    @api_operation(
        summary="Update an account",
        description="Renames an account, replaces its metadata, or changes its status: `frozen` refuses new "
        "postings, `open` takes them again, `closed` is final and needs a zero balance and nothing pending.",
        errors=[errors.AccountAbsent, errors.AccountClosed, errors.AccountNotEmpty],
        examples=[examples.account_update, examples.account_frozen],
        request=AccountUpdateSerializer,
        responses={200: AccountSerializer},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        serializer = AccountUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = accounts.account_update(account_id=pk, **serializer.validated_data)
        return Response(AccountSerializer(account).data)

    @api_operation(
        summary="List an account's postings",
        description="Every posting on the account, oldest first, with its transaction's reference and status; "
        "an account statement. Bound it with `created_after` / `created_before`.",
        errors=[errors.AccountAbsent, errors.InvalidTimestamp],
        examples=[examples.posting],
        parameters=[
            OpenApiParameter("created_after", str, description="ISO 8601 instant (inclusive)"),
            OpenApiParameter("created_before", str, description="ISO 8601 instant (exclusive)"),
        ],
        responses={200: AccountPostingSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def postings(self, request: Request, pk: str) -> Response:
        filters = PostingFilterSet(request.query_params, queryset=selectors.posting_list(account_id=pk))
        if not filters.is_valid():
            raise errors.InvalidTimestamp("; ".join(f"{k}: {' '.join(v)}" for k, v in filters.errors.items()))
        page = self.paginate_queryset(filters.qs)
        return self.get_paginated_response(AccountPostingSerializer(page, many=True).data)

    @api_operation(
        summary="Get an account's balance at an instant",
        description="The account's balances as they were at `as_of` (default: now), from the postings made "
        "before it: for month-end reports and reconciliation.",
        errors=[errors.AccountAbsent, errors.InvalidTimestamp],
        examples=[examples.balance],
        parameters=[OpenApiParameter("as_of", str, description="ISO 8601 instant; default now")],
        responses={200: BalanceSerializer},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def balance(self, request: Request, pk: str) -> Response:
        raw = request.query_params.get("as_of")
        as_of = timezone.now()
        if raw:
            try:
                as_of = timestamp_parse(raw)
            except ValueError as exc:
                raise errors.InvalidTimestamp(f"as_of must be an ISO 8601 timestamp, got {raw!r}.") from exc
        balance = selectors.account_balance_as_of(account_id=pk, as_of=as_of)
        return Response(BalanceSerializer(balance).data)


@extend_schema_view(
    list=api_operation(
        summary="List transactions",
        description="Transactions, oldest first. Filter by `reference`, `reference_prefix`, `status`, `account` "
        "(any posting on it) or creation time.",
        examples=[examples.transaction],
    ),
    retrieve=api_operation(
        summary="Get a transaction",
        description="A transaction with its postings.",
        errors=[errors.TransactionNotFound],
        examples=[examples.transaction],
    ),
)
class TransactionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Balanced transactions: created posted or pending (a hold), then posted or voided."""

    queryset = selectors.transaction_list()
    serializer_class = TransactionSerializer
    filterset_class = TransactionFilterSet
    pagination_class = IdCursor
    lookup_value_regex = id_segment("batch")  # transactions/batch is the batch endpoint, never an id

    def get_object(self) -> Any:
        return selectors.transaction_get(transaction_id=self.kwargs["pk"])

    @api_operation(
        summary="Create a transaction",
        description="Books a balanced transaction: its postings' debits equal its credits, all in one currency "
        "(amounts in minor units). It is applied at once (`posted`), or held (`pending: true`) until you post or "
        "void it or it expires. The `reference` is yours and makes the call safe to retry: the same reference "
        "with the same content answers 200 with the transaction made the first time; with other content, 409 "
        "`reference_conflict`.",
        errors=(*_TRANSACTION_REFUSALS, errors.BatchRejected),
        examples=[examples.transaction_create, examples.transaction_hold, examples.transaction_created],
        request=TransactionInputSerializer,
        responses={201: TransactionSerializer, 200: TransactionSerializer},
    )
    def create(self, request: Request) -> Response:
        item = transaction_input_fast(request.data)
        if item is None:
            serializer = TransactionInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            item = serializer.to_input()
        txn, created = transactions.transaction_create(item=item)
        return Response(
            TransactionSerializer(txn).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @api_operation(
        summary="Post a pending transaction",
        description="Applies a held transaction: its amounts move from pending to posted.",
        errors=[
            errors.TransactionNotFound,
            errors.TransactionNotPending,
            errors.AccountFrozen,
            errors.AccountClosed,
            errors.InvalidAmount,
        ],
        examples=[examples.transaction_posted],
        request=None,
        responses={200: TransactionSerializer},
    )
    @action(detail=True, methods=["post"])
    def post(self, request: Request, pk: str) -> Response:
        return Response(TransactionSerializer(settlement.transaction_post(transaction_id=pk)).data)

    @api_operation(
        summary="Void a pending transaction",
        description="Releases a held transaction: its pending amounts are given back and nothing is posted.",
        errors=[
            errors.TransactionNotFound,
            errors.TransactionNotPending,
            errors.AccountFrozen,
            errors.AccountClosed,
            errors.InvalidAmount,
        ],
        examples=[examples.transaction_voided],
        request=None,
        responses={200: TransactionSerializer},
    )
    @action(detail=True, methods=["post"])
    def void(self, request: Request, pk: str) -> Response:
        return Response(TransactionSerializer(settlement.transaction_void(transaction_id=pk)).data)


class TransactionBatchView(APIView):
    """Up to 1,000 transactions in one call, each with its own result; ``atomic`` for all or nothing."""

    # 1,000 transactions need more than the ledger's 1 MiB body limit (services/kit/middleware.py).
    max_body_setting = "LEDGER_MAX_BATCH_BODY_BYTES"

    @api_operation(
        summary="Create up to 1,000 transactions",
        description="Each item is a transaction as for a single create, with its own `request_id` if you like; "
        "the answer has one result per item, in order: `created`, `exists` (its reference was used with the "
        "same content) or `error` with a `code`. A refused item fails alone unless `atomic` is true: then "
        "nothing is applied and the call answers 422 `batch_rejected` with every item's result.",
        errors=[errors.BatchRejected],
        examples=[examples.batch, examples.batch_results],
        request=BatchInputSerializer,
        responses={200: inline_serializer("BatchResults", {"results": BatchResultSerializer(many=True)})},
    )
    def post(self, request: Request) -> Response:
        batch = BatchInputSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        items: list[Any] = []
        shape_errors: dict[int, dict[str, Any]] = {}
        raws = batch.validated_data["transactions"]
        span_request_ids_set(raws)  # OpenTelemetry (when on): the items' request ids on this request's span
        # One serializer validates every item: building its field tree per item cost ~0.5 ms each.
        serializer = BatchItemInputSerializer()
        for index, raw in enumerate(raws):
            fast = transaction_input_fast(raw, batch_item=True)
            if fast is not None:
                items.append(fast)
                continue
            try:
                items.append(transaction_input(serializer.run_validation(raw)))
            except ValidationError as exc:
                shape_errors[index] = {
                    "index": index,
                    "status": "error",
                    "code": "validation_error",
                    "detail": _flatten(exc.detail),
                }
        atomic = batch.validated_data["atomic"]
        if atomic and shape_errors:
            # Malformed items never reach the write path, so the rejection is audited here: one failure event
            # per item (the malformed ones' validation_error, batch_rejected for the others).
            keys = [(_reference(raw), _request_id(raw)) for raw in raws]
            transactions.transactions_refused(refusals=transactions.batch_refusals(keys, list(shape_errors.values())))
        outcome = _run(items, atomic, shape_errors)
        if shape_errors:
            # The malformed items of a committed batch: their refusals in a short transaction after it.
            transactions.transactions_refused(
                refusals=[
                    (_reference(raws[i]), _ShapeError(**e).error, _request_id(raws[i]))
                    for i, e in sorted(shape_errors.items())
                ]
            )
        return Response({"results": [bulk.result_as_dict(r) for r in outcome]})


class TransactionSettleBatchView(APIView):
    """Post or void up to 1,000 pending transactions in one call, each with its own result."""

    @api_operation(
        summary="Post or void up to 1,000 pending transactions",
        description="Settles many holds in one call: `action` is `post` or `void`, each item a transaction id "
        "(or `{id, request_id}`). One result per item, in order: `posted`, `voided`, or `error` with a `code` "
        "(`not_found`, `transaction_not_pending`, …); an item's refusal never fails the others.",
        examples=[examples.settle, examples.settle_results],
        request=SettleBatchInputSerializer,
        responses={200: inline_serializer("SettleResults", {"results": SettleResultSerializer(many=True)})},
    )
    def post(self, request: Request) -> Response:
        batch = SettleBatchInputSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        span_request_ids_set(request.data.get("transactions"))  # items that carry a request_id (OpenTelemetry)
        items: list[tuple[str, str]] = batch.validated_data["transactions"]
        results = settlement.transactions_settle(
            transaction_ids=[transaction_id for transaction_id, _ in items],
            request_ids=[request_id for _, request_id in items],
            post=batch.validated_data["action"] == "post",
        )
        return Response({"results": [bulk.result_as_dict(r) for r in results]})


def _reference(raw: Any) -> str:
    """The reference of a (possibly malformed) batch item, for its audit event."""
    reference = raw.get("reference") if isinstance(raw, dict) else None
    return reference[:200] if isinstance(reference, str) else ""


def _request_id(raw: Any) -> str:
    """The request id of a (possibly malformed) batch item for its audit event: its own if valid, else ""
    (the call's)."""
    request_id = raw.get("request_id") if isinstance(raw, dict) else None
    return request_id if isinstance(request_id, str) and request_id_clean(request_id) else ""


def _run(items: list[Any], atomic: bool, shape_errors: dict[int, dict[str, Any]]) -> list[Any]:
    if atomic and shape_errors:
        raise errors.BatchRejected(
            "At least one transaction is malformed, so none were applied.",
            extra={"results": list(shape_errors.values())},
        )
    outcome = transactions.transactions_create(items=items, atomic=atomic) if items else []
    # Re-number service results to the request's indices (malformed items were left out).
    positions = [i for i in range(len(items) + len(shape_errors)) if i not in shape_errors]
    merged: list[Any] = []
    for result in outcome:
        result.index = positions[result.index]
        merged.append(result)
    merged.extend(_ShapeError(**e) for e in shape_errors.values())
    return sorted(merged, key=lambda r: r.index)


class _ShapeError:
    def __init__(self, index: int, status: str, code: str, detail: str) -> None:
        self.index, self.status, self.transaction = index, status, None
        self.error = DomainError(detail, code=code)


def _flatten(errors: Any, prefix: str = "") -> str:
    if isinstance(errors, dict):
        return "; ".join(_flatten(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in errors.items())
    if isinstance(errors, list):
        if all(isinstance(e, str) for e in errors):
            return f"{prefix}: {' '.join(errors)}" if prefix else " ".join(errors)
        return "; ".join(_flatten(e, f"{prefix}[{i}]") for i, e in enumerate(errors) if e)
    return f"{prefix}: {errors}"
