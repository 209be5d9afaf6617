"""Payments API: parse → call a service → serialize."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from services.kit.canonical_urls import id_segment
from services.kit.pagination import IdCursor
from services.kit.schema import api_operation
from services.payments import errors, idempotency, selectors, services
from services.payments.api.serializers import (
    PaymentCreateSerializer,
    PaymentSerializer,
    PaymentStatsSerializer,
    ReviewDecisionSerializer,
    create_input_fast,
)
from services.payments.filtersets import PaymentFilterSet
from services.payments.models import Payment

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    idempotency.HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    pattern=f"^[!-~]{{1,{idempotency.MAX_KEY_LENGTH}}}$",
    examples=[OpenApiExample("A key of your own per payment", value="order-7731-payment-1")],
    description="Makes the creation safe to retry: the same key with the same body answers the saved "
    "response again (header Idempotent-Replayed: true) for 24 h; with another body, 422 "
    "idempotency_key_reused; while the first request runs, 409 idempotency_key_in_progress.",
)


_PAYMENT = {
    "id": "pay_01m91tj5ev42na01t62vyy23q9",
    "status": "settled",
    "amount": 1250,
    "currency": "EUR",
    "source_account": "acc_01m91tj5evthg5y88hn0fhqfcz",
    "destination_account": "acc_01m91tj5ew2c6x0yq7k3p8d4rb",
    "description": "Invoice 2026-118",
    "metadata": {"invoice": "2026-118"},
    "ledger_transaction": "txn_01m91tj5evgh0f2v6jnfcwavj8",
    "failure_code": "",
    "failure_message": "",
    "status_history": [
        {"status": "created", "at": "2026-12-04T09:31:00.000000Z"},
        {"status": "screening", "at": "2026-12-04T09:31:00.120000Z"},
        {"status": "processing", "at": "2026-12-04T09:31:00.180000Z"},
        {"status": "settled", "at": "2026-12-04T09:31:00.410000Z"},
    ],
    "created_at": "2026-12-04T09:31:00.000000Z",
    "updated_at": "2026-12-04T09:31:00.410000Z",
}
_CREATED = _PAYMENT | {
    "status": "created",
    "ledger_transaction": None,
    "status_history": _PAYMENT["status_history"][:1],
    "updated_at": "2026-12-04T09:31:00.000000Z",
}
_PAYMENT_EXAMPLE = OpenApiExample("A settled payment", value=_PAYMENT, response_only=True)


_REVIEWED = _CREATED | {
    "status": "review",
    "status_history": [
        *_PAYMENT["status_history"][:2],
        {"status": "review", "at": "2026-12-04T09:31:00.160000Z"},
    ],
    "updated_at": "2026-12-04T09:31:00.160000Z",
}
_REVIEW_ERRORS = [errors.PaymentNotFound, errors.PaymentNotInReview]


def _review_request(verb: str, reason: str) -> OpenApiExample:
    return OpenApiExample(f"{verb} with a reason", value={"reason": reason}, request_only=True)


def _decide(request: Request, pk: str, decision: str) -> Response:
    serializer = ReviewDecisionSerializer(data=request.data if request.data else {})
    serializer.is_valid(raise_exception=True)
    payment = services.payment_review_decide(
        payment_id=pk, decision=decision, reason=serializer.validated_data.get("reason", "")
    )
    return Response(PaymentSerializer(payment).data)


@extend_schema_view(
    list=api_operation(
        summary="List payments",
        description="Payments, oldest first. Filter by `status`, `currency`, an account (`source_account`, "
        "`destination_account`) or creation time; follow `next` for the next page.",
        examples=[_PAYMENT_EXAMPLE],
    ),
    retrieve=api_operation(
        summary="Get a payment",
        description="A payment and its status history. Poll it (or its trace page) to see it settle: `created` "
        "→ `screening` → `processing` → `settled`; or `rejected` or `failed` with a `failure_code`, or "
        "`canceled`. With risk screening on, a payment may wait in `review` for an operator (approve or reject it).",
        errors=[errors.PaymentNotFound],
        examples=[_PAYMENT_EXAMPLE],
    ),
)
class PaymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Payment orders: accepted at once (``created``), carried out by the payments workers."""

    queryset = selectors.payment_list()
    serializer_class = PaymentSerializer
    filterset_class = PaymentFilterSet
    pagination_class = IdCursor
    lookup_value_regex = id_segment("stats")  # payments/stats is the stats endpoint, never an id

    def get_object(self) -> Payment:
        return selectors.payment_get(self.kwargs["pk"])

    @api_operation(
        summary="Create a payment",
        description="Orders a transfer of `amount` (integer minor units: 1250 is EUR 12.50) from one ledger "
        "account to another in the same currency. It is accepted at once (201, status `created`) and carried "
        "out by the payments workers: screened, held and settled in the ledger. Send an `Idempotency-Key` to "
        "retry safely: the same key and body answer the first response again with `Idempotent-Replayed: true`.",
        errors=[
            errors.InvalidAmount,
            errors.AmountTooLarge,
            errors.UnsupportedCurrency,
            errors.SameAccount,
            errors.AccountNotFound,
            errors.CurrencyMismatch,
            errors.IdempotencyKeyReused,
            errors.IdempotencyKeyInProgress,
            errors.InvalidIdempotencyKey,
        ],
        examples=[
            OpenApiExample(
                "Pay EUR 12.50",
                value={
                    "amount": 1250,
                    "currency": "EUR",
                    "source_account": _PAYMENT["source_account"],
                    "destination_account": _PAYMENT["destination_account"],
                    "description": "Invoice 2026-118",
                    "metadata": {"invoice": "2026-118"},
                },
                request_only=True,
            ),
            OpenApiExample("The payment, accepted", value=_CREATED, response_only=True, status_codes=["201"]),
        ],
        request=PaymentCreateSerializer,
        responses={201: PaymentSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    def create(self, request: Request) -> Response:
        held = idempotency.begin(
            client_id=request.user.client_id,
            header=request.headers.get(idempotency.HEADER),
            method=request.method or "POST",
            route=idempotency.request_route(request),
            body=request.data,
        )
        if isinstance(held, idempotency.Replay):
            return Response(held.body, status=held.status, headers={idempotency.REPLAY_HEADER: "true"})
        with idempotency.released_on_error(held):
            data = create_input_fast(request.data)
            if data is None:
                serializer = PaymentCreateSerializer(data=request.data)
                serializer.is_valid(raise_exception=True)
                data = serializer.validated_data
            _, body = services.payment_create(client_id=request.user.client_id, claim=held, **data)
        return Response(body, status=status.HTTP_201_CREATED)

    @api_operation(
        summary="Payments in the last hour or day, by status",
        description="Counts and sums (per currency, in minor units) of the payments created in the window, "
        "grouped by their status now. Needs `payments:read`; an unknown window is `400 invalid_window`.",
        errors=[errors.InvalidStatsWindow],
        parameters=[
            OpenApiParameter("window", str, enum=list(selectors.STATS_WINDOWS), default="1h", description="1h or 24h.")
        ],
        responses={200: PaymentStatsSerializer},
        examples=[
            OpenApiExample(
                "The last hour",
                response_only=True,
                value={
                    "window": "1h",
                    "since": "2026-12-05T01:00:00Z",
                    "until": "2026-12-05T02:00:00Z",
                    "count": 3,
                    "statuses": [
                        {"status": "created", "count": 0, "amounts": []},
                        {
                            "status": "settled",
                            "count": 3,
                            "amounts": [
                                {"currency": "EUR", "count": 2, "amount": 4000},
                                {"currency": "USD", "count": 1, "amount": 700},
                            ],
                        },
                    ],
                },
            )
        ],
    )
    @action(detail=False, methods=["get"], filter_backends=[], pagination_class=None)
    def stats(self, request: Request) -> Response:
        found = selectors.payment_stats(window=request.query_params.get("window", "1h"))
        return Response(PaymentStatsSerializer(found).data)

    @api_operation(
        summary="Cancel a payment",
        description="Cancels a payment that is still `created`, `screening` or `review`; later it is too late (409 "
        "`payment_not_cancelable`).",
        errors=[errors.PaymentNotFound, errors.PaymentNotCancelable],
        examples=[
            OpenApiExample(
                "The payment, canceled",
                value=_CREATED | {"status": "canceled", "updated_at": "2026-12-04T09:31:00.050000Z"},
                response_only=True,
            )
        ],
        request=None,
        responses={200: PaymentSerializer},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return Response(PaymentSerializer(services.payment_cancel(payment_id=pk)).data)

    @api_operation(
        summary="Approve a payment in review",
        description="The risk service marked the payment for review; approving it lets it go on to the ledger "
        '(`review` → `processing` → `settled`). Optional body `{"reason": …}` (at most 500 characters), kept in '
        "the audit trail (`payments.payment.review_approved`, with the caller as the actor). A payment not in "
        "`review` — already approved or rejected, canceled, never reviewed — is `409 payment_not_in_review` with "
        "its `payment_status`.",
        errors=_REVIEW_ERRORS,
        examples=[
            _review_request("Approve", "Known customer, invoice checked"),
            OpenApiExample(
                "The payment, approved",
                value=_REVIEWED
                | {
                    "status": "processing",
                    "status_history": [
                        *_REVIEWED["status_history"],
                        {"status": "processing", "at": "2026-12-04T09:40:12.000000Z"},
                    ],
                    "updated_at": "2026-12-04T09:40:12.000000Z",
                },
                response_only=True,
            ),
        ],
        request=ReviewDecisionSerializer,
        responses={200: PaymentSerializer},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        return _decide(request, pk, "approve")

    @api_operation(
        summary="Reject a payment in review",
        description="The risk service marked the payment for review; rejecting it ends it `rejected` with "
        "`failure_code` `risk_review_rejected` (and the reason, if given, in `failure_message`). Optional body "
        '`{"reason": …}` (at most 500 characters), kept in the audit trail (`payments.payment.review_rejected`, '
        "with the caller as the actor). A payment not in `review` is `409 payment_not_in_review`.",
        errors=_REVIEW_ERRORS,
        examples=[
            _review_request("Reject", "Payee not known to the customer"),
            OpenApiExample(
                "The payment, rejected",
                value=_REVIEWED
                | {
                    "status": "rejected",
                    "failure_code": "risk_review_rejected",
                    "failure_message": "Rejected in review: Payee not known to the customer",
                    "status_history": [
                        *_REVIEWED["status_history"],
                        {"status": "rejected", "at": "2026-12-04T09:40:12.000000Z"},
                    ],
                    "updated_at": "2026-12-04T09:40:12.000000Z",
                },
                response_only=True,
            ),
        ],
        request=ReviewDecisionSerializer,
        responses={200: PaymentSerializer},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        return _decide(request, pk, "reject")
