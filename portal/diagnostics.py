"""Wiring diagnostics: prove request → broker → worker → result works end to end."""

from __future__ import annotations

from celery.exceptions import TimeoutError as CeleryTimeout
from drf_spectacular.utils import OpenApiExample, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.identity.roles import ROLE_ADMIN, ROLE_OPERATOR
from services.kit.celery_app import app
from services.kit.errors import DomainError
from services.kit.schema import api_operation
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

    @api_operation(
        summary="Ping a portal worker",
        description="Sends a ping task to the portal's queue and waits (up to `timeout` seconds) for a worker's "
        "answer: a check that the broker and the workers are up. Admins and operators.",
        errors=[WorkerTimeout],
        examples=[
            OpenApiExample("Wait up to 5 s", value={"message": "ping", "timeout": 5}, request_only=True),
            OpenApiExample(
                "A worker answered",
                value={
                    "task_id": "5b1f0c2e-8f7a-4d1e-9c3b-2a6d7e8f9a0b",
                    "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
                    "worker": {"message": "ping", "hostname": "portal@host-1", "pid": 4242},
                },
                response_only=True,
            ),
        ],
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
