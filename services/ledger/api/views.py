"""Ledger API: parse → call a service or selector → serialize."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
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
from services.kit.telemetry import span_request_ids_set
from services.kit.timestamps import timestamp_parse
from services.ledger import selectors
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
from services.ledger.errors import BatchRejected, InvalidTimestamp
from services.ledger.filtersets import AccountFilterSet, PostingFilterSet, TransactionFilterSet
from services.ledger.services import accounts, bulk, settlement, transactions


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

    @extend_schema(request=AccountCreateSerializer, responses={201: AccountSerializer})
    def create(self, request: Request) -> Response:
        serializer = AccountCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = accounts.account_create(**serializer.validated_data)
        return Response(AccountSerializer(account).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=AccountUpdateSerializer, responses={200: AccountSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        serializer = AccountUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = accounts.account_update(account_id=pk, **serializer.validated_data)
        return Response(AccountSerializer(account).data)

    @extend_schema(
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
            raise InvalidTimestamp("; ".join(f"{k}: {' '.join(v)}" for k, v in filters.errors.items()))
        page = self.paginate_queryset(filters.qs)
        return self.get_paginated_response(AccountPostingSerializer(page, many=True).data)

    @extend_schema(
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
                raise InvalidTimestamp(f"as_of must be an ISO 8601 timestamp, got {raw!r}.") from exc
        balance = selectors.account_balance_as_of(account_id=pk, as_of=as_of)
        return Response(BalanceSerializer(balance).data)


class TransactionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Balanced transactions: created posted or pending (a hold), then posted or voided."""

    queryset = selectors.transaction_list()
    serializer_class = TransactionSerializer
    filterset_class = TransactionFilterSet
    pagination_class = IdCursor
    lookup_value_regex = id_segment("batch")  # transactions/batch is the batch endpoint, never an id

    def get_object(self) -> Any:
        return selectors.transaction_get(transaction_id=self.kwargs["pk"])

    @extend_schema(
        request=TransactionInputSerializer, responses={201: TransactionSerializer, 200: TransactionSerializer}
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

    @extend_schema(request=None, responses={200: TransactionSerializer})
    @action(detail=True, methods=["post"])
    def post(self, request: Request, pk: str) -> Response:
        return Response(TransactionSerializer(settlement.transaction_post(transaction_id=pk)).data)

    @extend_schema(request=None, responses={200: TransactionSerializer})
    @action(detail=True, methods=["post"])
    def void(self, request: Request, pk: str) -> Response:
        return Response(TransactionSerializer(settlement.transaction_void(transaction_id=pk)).data)


class TransactionBatchView(APIView):
    """Up to 1,000 transactions in one call, each with its own result; ``atomic`` for all or nothing."""

    # 1,000 transactions need more than the ledger's 1 MiB body limit (services/kit/middleware.py).
    max_body_setting = "LEDGER_MAX_BATCH_BODY_BYTES"

    @extend_schema(
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

    @extend_schema(
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
        raise BatchRejected(
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
