"""The audit trail's REST API: search, detail, inclusion proofs, signed heads, public key, export; and for services
in any language, ingest over HTTP (scope ``audit:ingest``) and the events' JSON Schema (public).

Views parse, call :mod:`portal.audit.selectors` (reads) and :mod:`portal.audit.services` (writes), and serialize.
No GET signs a head: a proof is against the latest signed head (``POST heads/`` signs one now).

Everything here but ingest and the schema needs the auditor role (admins included) or, for machine clients, the scope
``audit:read``; every read is itself audited. Lists use keyset (cursor) pagination on ``seq`` and never
count the table.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.exceptions import ParseError, PermissionDenied, UnsupportedMediaType
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.audit import intake, selectors, services
from portal.audit.api import examples
from portal.audit.errors import (
    AuditEventNotFound,
    AuditIngestUnavailable,
    AuditKeysUnavailable,
    AuditLogEmpty,
    AuditSequenceConflict,
    AuditSequenceGap,
    AuditServiceMismatch,
    AuditServiceUnregistered,
    EventNotSigned,
    InvalidFilter,
)
from portal.audit.event_schema import audit_schema
from portal.audit.heads import head_as_dict, public_key_pem
from portal.audit.keys import trusted_public_keys
from portal.audit.models import AuditEvent
from portal.identity.roles import ROLE_ADMIN, ROLE_AUDITOR
from services.kit.auth import ClientPrincipal, HasScope
from services.kit.logs import get_logger
from services.kit.pagination import CursorPagination
from services.kit.schema import api_operation

log = get_logger(__name__)

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


class AuditPublicKeysView(APIView):
    """Every Ed25519 public key that verifies signed heads: the current one, then the retired ones. Public."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @api_operation(
        summary="Get every audit public key (current and retired)",
        description=(
            "The current Ed25519 public key, then each retired one (``AUDIT_RETIRED_PUBLIC_KEY_FILES``), as PEM "
            "blocks in one file: heads signed before a key rotation verify only with the key they name "
            "(``key_id``: SHA-256 of the raw public key, first 16 hex digits). The standalone verifier takes "
            "this file as its ``--public-key``. Public: no token needed."
        ),
        errors=[AuditKeysUnavailable],
        examples=[examples.public_keys],
        responses={(200, "application/x-pem-file"): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> HttpResponse:
        try:
            keys = trusted_public_keys()
        except ImproperlyConfigured as exc:
            log.error("audit.retired_key_unreadable", error=str(exc)[:500])
            raise AuditKeysUnavailable(
                "A retired audit public key could not be read (AUDIT_RETIRED_PUBLIC_KEY_FILES); a partial list would "
                "make heads signed by it look forged. The portal's `manage.py check` names the file."
            ) from exc
        pems = b"".join(pem.strip() + b"\n" for pem in keys.values())
        return HttpResponse(pems, content_type="application/x-pem-file")


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


class IngestRequestSerializer(serializers.Serializer):
    """The ingest request (documentation only: the body is checked by portal/audit/intake.py)."""

    events = serializers.ListField(
        child=serializers.DictField(), min_length=1, max_length=intake.MAX_EVENTS,
        help_text="Audit events of the caller's own services, each in the published schema "
        "(GET /api/v1/audit/schema, $defs.event).",
    )  # fmt: skip


class IngestResultSerializer(serializers.Serializer):
    inserted = serializers.IntegerField(help_text="Events chained (placeholders of parked ones included).")
    duplicates = serializers.IntegerField(help_text="Events already recorded at the same place: not written again.")
    parked = serializers.IntegerField(help_text="Events chained as placeholders (malformed payloads).")
    first_seq = serializers.IntegerField(allow_null=True, help_text="Global chain seq of the first event written.")
    last_seq = serializers.IntegerField(allow_null=True, help_text="Global chain seq of the last event written.")


class MachineClientsOnly(BasePermission):
    """Only a machine client with the view's scopes (a service); people ingest nothing."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.user, ClientPrincipal):
            return HasScope().has_permission(request, view)
        if not request.user or not request.user.is_authenticated:
            return False
        raise PermissionDenied(
            "Audit events are ingested by services: a machine client's token with the scope audit:ingest.",
            code="insufficient_scope",
        )


class AuditIngestView(APIView):
    """A service's audit events over HTTP: the language-neutral path to the sequencer (docs/audit.md)."""

    permission_classes = [MachineClientsOnly]
    required_scopes = {"*": {"audit:ingest"}}
    max_body_setting = "AUDIT_INGEST_MAX_BODY_BYTES"

    @api_operation(
        summary="Ingest audit events",
        description="A service's audit events, from its transactional outbox, in its `service_seq` order: "
        '`{"events": [...]}`, 1 to 1,000 events in the published schema (`GET /api/v1/audit/schema`). Needs a '
        "machine client's token for audience `portal` with the scope `audit:ingest`, and every event's `service` "
        "must be the catalog service that client registered. Idempotent on event id: a batch sent again answers "
        "200 with its events counted as `duplicates`. Checked in this order, the whole request refused on the "
        "first failure: the envelope (400 `validation_error`), the identity (403 `audit_service_mismatch`, "
        "`audit_service_unregistered`), the sequence under the sequencer's lock (409 `audit_sequence_conflict`; "
        "409 `audit_sequence_gap` with `expected_seq` and `received_seq`: send from `expected_seq` on). Refused "
        "events are kept in `audit_rejected`. An event the sequencer cannot chain (missing action, bad outcome...) "
        "is parked as a placeholder in its place, so the sequence stays gapless (`parked` counts them).",
        errors=[
            AuditServiceMismatch,
            AuditServiceUnregistered,
            AuditSequenceConflict,
            AuditSequenceGap,
            AuditIngestUnavailable,
        ],
        examples=[examples.ingest_request, examples.ingest_result, examples.ingest_gap, examples.ingest_conflict],
        request=IngestRequestSerializer,
        responses={200: IngestResultSerializer},
        # a machine client's bearer token only: a signed-in person is answered 403 (MachineClientsOnly)
        auth=[{"oauth2": ["audit:ingest"]}, {"bearerAuth": []}],
    )
    def post(self, request: Request) -> Response:
        client_id = request.user.client_id
        raw = request.body  # read first: a body the parser refuses is kept aside as it arrived
        try:
            body = request.data
        except (ParseError, UnsupportedMediaType) as exc:
            code = exc.get_codes()
            services.body_refused_keep(
                raw=raw, code=code if isinstance(code, str) else "malformed_request", detail=str(exc.detail),
                client_id=client_id,
            )  # fmt: skip
            raise
        result = services.events_ingest_http(body=body, client_id=client_id)
        return Response(result.as_dict())


class AuditSchemaView(APIView):
    """The JSON Schema of an audit event and of the ingest request. Public: any service's build may fetch it."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @api_operation(
        summary="Get the audit event schema",
        description="A JSON Schema (2020-12) document: the ingest request body, and one audit event in "
        "`$defs.event` (what the sequencer chains; optional fields as the Python kit writes them). Public and "
        "cacheable (an hour).",
        examples=[examples.schema],
        responses={(200, "application/schema+json"): OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> HttpResponse:
        body = json.dumps(audit_schema(), indent=1, ensure_ascii=False)
        response = HttpResponse(body, content_type="application/schema+json")
        response["Cache-Control"] = "public, max-age=3600"
        return response
