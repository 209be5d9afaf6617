"""Payments API: parse → call a service → serialize."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from services.kit.canonical_urls import id_segment
from services.kit.pagination import IdCursor
from services.kit.serializers import ProblemSerializer
from services.payments import idempotency, selectors, services
from services.payments.api.serializers import (
    PaymentCreateSerializer,
    PaymentSerializer,
    PaymentStatsSerializer,
    create_input_fast,
)
from services.payments.filtersets import PaymentFilterSet
from services.payments.models import Payment

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    idempotency.HEADER,
    str,
    OpenApiParameter.HEADER,
    description="Makes the creation safe to retry: the same key with the same body answers the saved "
    "response again (header Idempotent-Replayed: true) for 24 h; with another body, 422 "
    "idempotency_key_reused; while the first request runs, 409 idempotency_key_in_progress.",
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

    @extend_schema(
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

    @extend_schema(
        summary="Payments in the last hour or day, by status",
        description="Counts and sums (per currency, in minor units) of the payments created in the window, "
        "grouped by their status now. Needs `payments:read`; an unknown window is `400 invalid_window`.",
        parameters=[
            OpenApiParameter("window", str, enum=list(selectors.STATS_WINDOWS), default="1h", description="1h or 24h.")
        ],
        responses={
            200: PaymentStatsSerializer,
            (400, "application/problem+json"): OpenApiResponse(
                ProblemSerializer, description="invalid_window: the known windows are in `windows`"
            ),
        },
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

    @extend_schema(request=None, responses={200: PaymentSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return Response(PaymentSerializer(services.payment_cancel(payment_id=pk)).data)
