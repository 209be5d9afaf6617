"""The audit trail's REST API: search, detail, inclusion proofs, signed heads, public key, export.

Views parse, call :mod:`portal.audit.selectors` (reads) and :mod:`portal.audit.services` (writes), and serialize.
No GET signs a head: a proof is against the latest signed head (``POST heads/`` signs one now).

Everything here needs the auditor role (admins included) or, for machine clients, the scope
``audit:read``; every read is itself audited. Lists use keyset (cursor) pagination on ``seq`` and never
count the table.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.audit import selectors, services
from portal.audit.api import examples
from portal.audit.errors import AuditEventNotFound, AuditLogEmpty, EventNotSigned, InvalidFilter
from portal.audit.heads import head_as_dict, public_key_pem
from portal.audit.models import AuditEvent
from portal.identity.roles import ROLE_ADMIN, ROLE_AUDITOR
from services.kit.pagination import CursorPagination
from services.kit.schema import api_operation

AUDITORS = (ROLE_ADMIN, ROLE_AUDITOR)
READ = {"GET": {"audit:read"}, "*": {"audit:read"}}


class SeqCursor(CursorPagination):
    ordering = "-seq"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500


class OccurredCursor(SeqCursor):
    """Time-range searches: newest occurrence first (seq breaks ties), served by the (occurred_at, seq) index."""

    ordering = ("-occurred_at", "-seq")


class HeadCursor(CursorPagination):
    ordering = "-tree_size"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500


class AuditEventSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="event_id")
    actor = serializers.SerializerMethodField()
    object = serializers.SerializerMethodField()
    hash = serializers.SerializerMethodField()
    prev_hash = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = [
            "seq", "id", "service", "service_seq", "occurred_at", "recorded_at", "actor", "action", "outcome",
            "object", "request_id", "source_ip", "user_agent", "changes", "metadata", "hash", "prev_hash",
        ]  # fmt: skip

    def get_actor(self, obj: AuditEvent) -> dict[str, str]:
        return {"type": obj.actor_type, "id": obj.actor_id, "display": obj.actor_display}

    def get_object(self, obj: AuditEvent) -> dict[str, str]:
        return {"type": obj.object_type, "id": obj.object_id}

    def get_hash(self, obj: AuditEvent) -> str:
        return bytes(obj.hash).hex()

    def get_prev_hash(self, obj: AuditEvent) -> str:
        return bytes(obj.prev_hash).hex()


FILTERS = [
    OpenApiParameter(name, OpenApiTypes.STR, description=text)
    for name, text in (
        ("service", "exact service name"),
        ("actor", "actor id"),
        ("actor_type", "user, client or system"),
        ("action", "action prefix, e.g. ledger.transaction"),
        ("object_type", "object type"),
        ("object_id", "object id"),
        ("outcome", "success or failure"),
        ("request_id", "request id"),
        ("occurred_after", "ISO 8601 timestamp (inclusive)"),
        ("occurred_before", "ISO 8601 timestamp (exclusive)"),
    )
]


class AuditEventListView(APIView):
    required_roles = AUDITORS
    required_scopes = READ
    pagination_class = SeqCursor

    @api_operation(
        summary="Search the audit trail",
        description="Audit events of every service, oldest first, filtered by service, actor, action prefix, "
        "object, outcome, request id or time. Each event carries its hash and the previous one's (the chain "
        "`GET /api/v1/audit/heads` signs). Auditors and admins only; reading the trail is itself audited.",
        errors=[InvalidFilter],
        examples=[examples.event],
        parameters=FILTERS,
        responses=AuditEventSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        queryset, used = selectors.event_list(params=request.query_params)
        timed = "occurred_after" in used or "occurred_before" in used
        paginator = OccurredCursor() if timed else SeqCursor()
        page = paginator.paginate_queryset(queryset, request, view=self)
        services.access_record(action="audit.events.listed", metadata={"filters": used, "returned": len(page)})
        return paginator.get_paginated_response(AuditEventSerializer(page, many=True).data)


class AuditEventDetailView(APIView):
    required_roles = AUDITORS
    required_scopes = READ

    @api_operation(
        summary="Get an audit event",
        description="One audit event by its id: who did what to which object, with what outcome, under which "
        "request, and its place in the hash chain.",
        errors=[AuditEventNotFound],
        examples=[examples.event],
        responses=AuditEventSerializer,
    )
    def get(self, request: Request, event_id: str) -> Response:
        event = selectors.event_get(event_id=event_id)
        services.access_record(
            action="audit.event.viewed",
            object_type="audit_event",
            object_id=event.event_id,
            metadata={"seq": event.seq},
        )
        return Response(AuditEventSerializer(event).data)


class AuditEventProofView(APIView):
    required_roles = AUDITORS
    required_scopes = READ

    @api_operation(
        summary="Prove an audit event is in the signed log",
        description="The event's Merkle inclusion proof against the latest signed head: with the public key "
        "(`GET /api/v1/audit/public-key`) anyone can check, offline, that the event is in the log and unchanged. "
        "An event newer than the latest head has no proof yet (409 `event_not_signed`).",
        errors=[AuditEventNotFound, EventNotSigned],
        examples=[examples.proof],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, event_id: str) -> Response:
        event = selectors.event_get(event_id=event_id)
        document = selectors.event_proof_get(event=event)
        services.access_record(
            action="audit.proof.requested",
            object_type="audit_event",
            object_id=event.event_id,
            metadata={"seq": event.seq},
        )
        return Response(document)


class AuditHeadListView(APIView):
    required_roles = AUDITORS
    required_scopes = READ

    @api_operation(
        summary="List signed heads",
        description="The audit log's signed heads (tree size, root hash, Ed25519 signature), newest first, each "
        "with the consistency proof from the previous one: that the log only grew.",
        examples=[examples.heads],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        paginator = HeadCursor()
        page = paginator.paginate_queryset(selectors.head_list(), request, view=self)
        results = selectors.head_list_with_consistency(page=page)
        services.access_record(action="audit.heads.listed", metadata={"returned": len(results)})
        return paginator.get_paginated_response(results)

    @api_operation(
        summary="Sign a head now",
        description="Signs the log as it is now (201), instead of waiting for the minute's signing; when nothing "
        "was added since the latest head, that head (200).",
        errors=[AuditLogEmpty],
        examples=[examples.head],
        request=None,
        responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        head, created = services.head_sign_now()
        return Response(head_as_dict(head), status=201 if created else 200)


class AuditPublicKeyView(APIView):
    """The Ed25519 public key that verifies signed heads (PEM). Public on purpose."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @api_operation(
        summary="Get the audit public key",
        description="The Ed25519 public key (PEM) that verifies signed heads and proofs. Public: no token needed.",
        examples=[examples.public_key],
        responses={(200, "application/x-pem-file"): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(public_key_pem(), content_type="application/x-pem-file")


class _FormatIsOurs(DefaultContentNegotiation):
    """``?format=`` names the export's file format here, not a DRF renderer."""

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


class AuditExportView(APIView):
    required_roles = AUDITORS
    required_scopes = READ
    content_negotiation_class = _FormatIsOurs

    @api_operation(
        summary="Export the audit trail",
        description="Every event the filters select, oldest first, streamed as JSON Lines (`format=jsonl`, the "
        "default) or CSV, as a file download. For evidence requests and offline analysis.",
        errors=[InvalidFilter],
        examples=[examples.export_jsonl, examples.export_csv],
        parameters=[*FILTERS, OpenApiParameter("format", OpenApiTypes.STR, enum=["jsonl", "csv"])],
        responses={(200, "application/x-ndjson"): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        kind = request.query_params.get("format", "jsonl")
        if kind not in ("jsonl", "csv"):
            raise InvalidFilter("format must be jsonl or csv.")
        queryset, used = selectors.event_list(params=request.query_params)
        queryset = queryset.order_by("seq")
        services.access_record(action="audit.events.exported", metadata={"filters": used, "format": kind})
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        if kind == "csv":
            response = StreamingHttpResponse(
                selectors.event_export_csv(queryset=queryset), content_type="text/csv; charset=utf-8"
            )
        else:
            response = StreamingHttpResponse(
                selectors.event_export_jsonl(queryset=queryset), content_type="application/x-ndjson"
            )
        response["Content-Disposition"] = f'attachment; filename="atrium-audit-{stamp}.{kind}"'
        return response
