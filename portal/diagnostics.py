"""Wiring diagnostics: prove request → broker → worker → result works end to end."""

from __future__ import annotations

from celery.exceptions import TimeoutError as CeleryTimeout
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.identity.roles import ROLE_ADMIN, ROLE_OPERATOR
from services.kit.celery_app import app
from services.kit.errors import DomainError
from services.kit.serializers import StrictSerializer


class WorkerTimeout(DomainError):
    code = "worker_timeout"
    status = 504
    title = "No worker answered in time"


class PingSerializer(StrictSerializer):
    message = serializers.CharField(max_length=200, required=False, default="ping")
    timeout = serializers.FloatField(min_value=0.1, max_value=30, required=False, default=10)


class PingView(APIView):
    """Send ``portal.ping`` to the ``portal`` queue and wait for a worker's answer."""

    required_scopes = {"POST": {"portal:write"}}
    required_roles = [ROLE_ADMIN, ROLE_OPERATOR]

    @extend_schema(
        request=PingSerializer,
        responses=inline_serializer(
            "PingResult",
            {
                "task_id": serializers.CharField(),
                "request_id": serializers.CharField(),
                "worker": serializers.DictField(),
            },
        ),
    )
    def post(self, request: Request) -> Response:
        serializer = PingSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        result = app.send_task("portal.ping", kwargs={"message": values["message"]})
        try:
            answer = result.get(timeout=values["timeout"], propagate=True)
        except CeleryTimeout as exc:
            raise WorkerTimeout(f"No portal worker answered within {values['timeout']} s.") from exc
        return Response({"task_id": result.id, "request_id": request._request.request_id, "worker": answer})
