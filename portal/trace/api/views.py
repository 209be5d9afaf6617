"""``GET /api/v1/trace/{id}``: the trace of a request id, an object id or a task id (:mod:`portal.trace.selectors`).

People with a portal role (admin, operator, auditor: audit events included; viewer: jobs only), machine clients
with ``jobs:read`` (audit events too with ``audit:read``). Every lookup is audited (``trace.viewed``).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.identity.permissions import RoleOrScope
from portal.identity.roles import ROLES
from portal.trace import errors, services
from portal.trace.api.serializers import TraceSerializer
from portal.trace.selectors import trace_viewer
from services.kit.schema import api_operation

_AT = "2026-12-04T09:31:00.000000Z"
_EXAMPLE = OpenApiExample(
    "A payment's request, settled",
    value={
        "id": "req_01m91tj5evb16g3wrkrk6xt9rh",
        "kind": "request",
        "request_ids": ["req_01m91tj5evb16g3wrkrk6xt9rh"],
        "audit_visible": True,
        "pending": False,
        "started_at": _AT,
        "ended_at": "2026-12-04T09:31:00.410000Z",
        "duration_ms": 410.0,
        "counts": {"events": 2, "jobs": 1},
        "truncated": {"events": False, "jobs": False, "request_ids": False},
        "limits": {"events": 2000, "jobs": 500, "request_ids": 50},
        "objects": [
            {
                "type": "payment",
                "id": "pay_01m91tj5ev42na01t62vyy23q9",
                "status": "settled",
                "pending": False,
                "last_at": "2026-12-04T09:31:00.410000Z",
            }
        ],
        "timeline": [
            {
                "kind": "audit",
                "at": _AT,
                "gap_ms": None,
                "pending": False,
                "service": "payments",
                "title": "payments.payment.created",
                "outcome": "success",
                "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
                "object": {"type": "payment", "id": "pay_01m91tj5ev42na01t62vyy23q9"},
                "event_id": "evt_01m91tj5evb16g3wrkrk6xt9rh",
                "seq": 1840,
                "actor": "shop-backend",
                "changes": {"status": [None, "created"]},
                "metadata": {},
                "task_id": None,
                "queue": None,
                "state": None,
                "queue_wait_ms": None,
                "runtime_ms": None,
                "retries": None,
                "finished_at": None,
                "linked": False,
            },
            {
                "kind": "job",
                "at": "2026-12-04T09:31:00.020000Z",
                "gap_ms": 20.0,
                "pending": False,
                "service": "payments",
                "title": "payments.drain",
                "outcome": "succeeded",
                "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
                "object": None,
                "event_id": None,
                "seq": None,
                "actor": None,
                "changes": None,
                "metadata": None,
                "task_id": "5b1f0c2e-8f7a-4d1e-9c3b-2a6d7e8f9a0b",
                "queue": "payments",
                "state": "succeeded",
                "queue_wait_ms": 12.5,
                "runtime_ms": 370.1,
                "retries": 0,
                "finished_at": "2026-12-04T09:31:00.400000Z",
                "linked": True,
            },
        ],
        "webhooks": {
            "state": "ok",
            "detail": "",
            "truncated": False,
            "messages": [
                {
                    "id": "msg_01m91tj5f0x6d2c7k9q3w8e4rt",
                    "type": "payment.settled",
                    "object_id": "pay_01m91tj5ev42na01t62vyy23q9",
                    "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
                    "created_at": "2026-12-04T09:31:00.420000Z",
                    "pending": False,
                    "deliveries": [
                        {
                            "endpoint": "ep_01m91s0a2b3c4d5e6f7g8h9j0k",
                            "state": "succeeded",
                            "attempts": 1,
                            "last_status": 200,
                            "next_attempt_at": None,
                        }
                    ],
                    "attempts": [
                        {
                            "number": 1,
                            "at": "2026-12-04T09:31:00.430000Z",
                            "endpoint": "ep_01m91s0a2b3c4d5e6f7g8h9j0k",
                            "status_code": 200,
                            "error": "",
                            "duration_ms": 4.2,
                            "trigger": "scheduled",
                        }
                    ],
                }
            ],
        },
    },
    response_only=True,
)


class TraceView(APIView):
    """One timeline of everything recorded for the id, across services, oldest first."""

    permission_classes = [RoleOrScope]
    required_roles = ROLES
    required_scopes = {"*": {"jobs:read"}}

    @api_operation(
        summary="Trace a request, an object or a job",
        description="One timeline, oldest first, of everything recorded for the id across services: the audit "
        "events and the background jobs of a request id, of an object (`pay_…`, `txn_…`, `acc_…`) or of a job. "
        "The answer says what is still pending and how long each step waited. A viewer sees jobs only.",
        errors=[errors.TraceIdInvalid, errors.TraceNotFound],
        examples=[_EXAMPLE],
        parameters=[
            OpenApiParameter(
                "trace_id",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="A request id, an object id (pay_…, txn_…, acc_…) or a job's task id.",
            )
        ],
        responses={200: TraceSerializer},
    )
    def get(self, request: Request, trace_id: str) -> Response:
        trace = services.trace_lookup(value=trace_id, viewer=trace_viewer(request.user), via="api")
        return Response(TraceSerializer(trace).data)
