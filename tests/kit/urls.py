"""A test URLconf: a few views that exercise the kit, then the kit's own patterns (last, as services do)."""

from __future__ import annotations

from django.urls import include, path
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from services.kit.errors import DomainError, NotFound
from services.kit.http import CircuitBreaker, ServiceClient
from services.kit.ids import id_is_valid
from services.kit.serializers import StrictSerializer
from services.kit.urls import kit_urlpatterns


class EchoSerializer(StrictSerializer):
    name = serializers.CharField(max_length=50)
    amount = serializers.IntegerField(min_value=1)


class EchoView(APIView):
    """Validates its body strictly and returns it: for parser and validation errors."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        serializer = EchoSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.validated_data, status=201)


class HeartbeatView(EchoView):
    """Called by machines every few seconds: its successful requests are logged at DEBUG."""

    access_log_quiet = True


class InsufficientFunds(DomainError):
    code = "insufficient_funds"
    status = 409
    title = "Insufficient funds"


class PayView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        raise InsufficientFunds("Account acc_1 holds 5, the transfer needs 10.", extra={"available": 5})


class SlowDown(DomainError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"


class BusyView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        raise SlowDown("Try again in 30 seconds.", headers={"Retry-After": "30"})


class RelayView(APIView):
    """Calls the upstream named in ``?upstream=`` through the kit's client: for upstream failures."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        client = ServiceClient(
            base_url=request.query_params["upstream"], retries=1, backoff=0.01, breaker=CircuitBreaker("relay")
        )
        try:
            upstream = client.get("/api/v1/thing")
        finally:
            client.close()
        return Response({"upstream_status": upstream.status_code})


class BugView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"ratio": 1 / 0})


class AccountView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request, account_id: str) -> Response:
        if not id_is_valid(account_id, "acc"):
            raise NotFound(f"No account {account_id!r}.")
        return Response({"id": account_id})


class ScopedView(APIView):
    """Default authentication (JWT) and permission (HasScope) with a declared scope."""

    required_scopes = {"GET": {"ledger:read"}}

    def get(self, request: Request) -> Response:
        return Response({"client_id": request.user.client_id, "scopes": sorted(request.user.scopes)})


urlpatterns = [
    path("api/v1/echo", EchoView.as_view(), name="echo"),
    path("api/v1/heartbeat", HeartbeatView.as_view(), name="heartbeat"),
    path("api/v1/pay", PayView.as_view(), name="pay"),
    path("api/v1/busy", BusyView.as_view(), name="busy"),
    path("api/v1/relay", RelayView.as_view(), name="relay"),
    path("api/v1/bug", BugView.as_view(), name="bug"),
    path("api/v1/accounts/<pid:account_id>", AccountView.as_view(), name="account"),
    path("api/v1/scoped", ScopedView.as_view(), name="scoped"),
    path("api/v1/", include("services.ledger.api.urls")),
    *kit_urlpatterns(),
]

# Django's error views (paths outside DRF): the kit's problem+json ones, the same in every root URLconf.
from services.kit.errors import handler400, handler403, handler404, handler500  # noqa: E402, F401
