"""``GET /api/v1/trace/{id}``: the trace of a request id, an object id or a task id (:mod:`portal.trace.selectors`).

People with a portal role (admin, operator, auditor: audit events included; viewer: jobs only), machine clients
with ``jobs:read`` (audit events too with ``audit:read``). Every lookup is audited (``trace.viewed``).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.identity.permissions import RoleOrScope
from portal.identity.roles import ROLES
from portal.trace import services
from portal.trace.api.serializers import TraceSerializer
from portal.trace.selectors import trace_viewer
from services.kit.serializers import ProblemSerializer

PROBLEM = "application/problem+json"


class TraceView(APIView):
    """One timeline of everything recorded for the id, across services, oldest first."""

    permission_classes = [RoleOrScope]
    required_roles = ROLES
    required_scopes = {"*": {"jobs:read"}}

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "trace_id",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="A request id, an object id (pay_…, txn_…, acc_…) or a job's task id.",
            )
        ],
        responses={
            200: TraceSerializer,
            (400, PROBLEM): OpenApiResponse(ProblemSerializer, description="trace_id_invalid"),
            (404, PROBLEM): OpenApiResponse(ProblemSerializer, description="trace_not_found"),
        },
    )
    def get(self, request: Request, trace_id: str) -> Response:
        trace = services.trace_lookup(value=trace_id, viewer=trace_viewer(request.user), via="api")
        return Response(TraceSerializer(trace).data)
