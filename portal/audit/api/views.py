"""The audit trail's REST API: search, detail, inclusion proofs, signed heads, public key, export.

Everything here needs the auditor role (admins included) or, for machine clients, the scope
``audit:read``; every read is itself audited. Lists use keyset (cursor) pagination on ``seq`` and never
count the table.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.audit import verifier
from portal.audit.chain import NodeSource
from portal.audit.heads import head_as_dict, head_sign, public_key_pem
from portal.audit.models import AuditEvent, AuditHead
from portal.identity.roles import ROLE_ADMIN, ROLE_AUDITOR
from services.kit.audit import audit_record
from services.kit.errors import DomainError, NotFound
from services.kit.pagination import CursorPagination
from services.kit.timestamps import timestamp_parse

AUDITORS = (ROLE_ADMIN, ROLE_AUDITOR)
READ = {"GET": {"audit:read"}, "*": {"audit:read"}}


class InvalidFilter(DomainError):
    code = "validation_error"
    status = 400
    title = "Invalid filter"


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
_EXACT = {
    "service": "service",
    "actor": "actor_id",
    "actor_type": "actor_type",
    "object_type": "object_type",
    "object_id": "object_id",
    "request_id": "request_id",
}


def _time(name: str, value: str) -> dt.datetime:
    try:
        return timestamp_parse(value)
    except ValueError as exc:
        raise InvalidFilter(f"{name} must be an ISO 8601 timestamp, got {value!r}.") from exc


def filtered(params: Any) -> tuple[Any, dict[str, str]]:
    """The events matching the query parameters, and the filters used (for the audit record)."""
    queryset = AuditEvent.objects.all()
    used: dict[str, str] = {}
    for param, column in _EXACT.items():
        value = params.get(param)
        if value:
            queryset = queryset.filter(**{column: value})
            used[param] = value
    if params.get("action"):
        queryset = queryset.filter(action__startswith=params["action"])
        used["action"] = params["action"]
    outcome = params.get("outcome")
    if outcome:
        if outcome not in ("success", "failure"):
            raise InvalidFilter("outcome must be success or failure.")
        queryset = queryset.filter(outcome=outcome)
        used["outcome"] = outcome
    for param, lookup in (("occurred_after", "occurred_at__gte"), ("occurred_before", "occurred_at__lt")):
        if params.get(param):
            queryset = queryset.filter(**{lookup: _time(param, params[param])})
            used[param] = params[param]
    return queryset, used


def _audit(action: str, *, object_type: str = "audit_log", object_id: str = "portal", **metadata: Any) -> None:
    with transaction.atomic():
        audit_record(action, object_type=object_type, object_id=object_id, metadata=metadata)


class AuditEventListView(APIView):
    required_roles = AUDITORS
    required_scopes = READ
    pagination_class = SeqCursor

    @extend_schema(parameters=FILTERS, responses=AuditEventSerializer(many=True))
    def get(self, request: Request) -> Response:
        queryset, used = filtered(request.query_params)
        timed = "occurred_after" in used or "occurred_before" in used
        paginator = OccurredCursor() if timed else SeqCursor()
        page = paginator.paginate_queryset(queryset, request, view=self)
        _audit("audit.events.listed", filters=used, returned=len(page))
        return paginator.get_paginated_response(AuditEventSerializer(page, many=True).data)


def _event(event_id: str) -> AuditEvent:
    event = AuditEvent.objects.filter(event_id=event_id).first()
    if event is None:
        raise NotFound(f"No audit event {event_id}.")
    return event


class AuditEventDetailView(APIView):
    required_roles = AUDITORS
    required_scopes = READ

    @extend_schema(responses=AuditEventSerializer)
    def get(self, request: Request, event_id: str) -> Response:
        event = _event(event_id)
        _audit("audit.event.viewed", object_type="audit_event", object_id=event.event_id, seq=event.seq)
        return Response(AuditEventSerializer(event).data)


def proof_document(event: AuditEvent) -> dict[str, Any]:
    """The inclusion proof of ``event`` against the latest signed head (signing one if none covers it)."""
    head = AuditHead.objects.order_by("-tree_size").first()
    if head is None or head.tree_size < event.seq:
        head = head_sign()
    path = verifier.inclusion_path(event.seq - 1, head.tree_size, NodeSource())
    return {
        "event": json.loads(event.canonical),
        "leaf_index": event.seq - 1,
        "leaf_hash": bytes(event.leaf_hash).hex(),
        "proof": [node.hex() for node in path],
        "head": head_as_dict(head),
    }


class AuditEventProofView(APIView):
    required_roles = AUDITORS
    required_scopes = READ

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, event_id: str) -> Response:
        event = _event(event_id)
        document = proof_document(event)
        _audit("audit.proof.requested", object_type="audit_event", object_id=event.event_id, seq=event.seq)
        return Response(document)


class AuditHeadListView(APIView):
    required_roles = AUDITORS
    required_scopes = READ

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        paginator = HeadCursor()
        page = paginator.paginate_queryset(AuditHead.objects.all(), request, view=self)
        nodes = NodeSource()
        results = []
        for head in page:
            previous = AuditHead.objects.filter(tree_size__lt=head.tree_size).order_by("-tree_size").first()
            body = head_as_dict(head)
            body["previous_tree_size"] = previous.tree_size if previous else None
            body["consistency_proof"] = (
                [n.hex() for n in verifier.consistency_path(previous.tree_size, head.tree_size, nodes)]
                if previous
                else []
            )
            results.append(body)
        _audit("audit.heads.listed", returned=len(results))
        return paginator.get_paginated_response(results)

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        before = AuditHead.objects.order_by("-tree_size").first()
        head = head_sign()
        if head is None:
            raise InvalidFilter("The audit log is empty: there is nothing to sign yet.", code="audit_log_empty")
        created = before is None or head.tree_size != before.tree_size
        _audit("audit.head.signed", object_type="audit_head", object_id=str(head.tree_size), on_demand=True)
        return Response(head_as_dict(head), status=201 if created else 200)


class AuditPublicKeyView(APIView):
    """The Ed25519 public key that verifies signed heads (PEM). Public on purpose."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses={(200, "application/x-pem-file"): OpenApiTypes.STR})
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(public_key_pem(), content_type="application/x-pem-file")


_CSV_COLUMNS = [
    "seq", "event_id", "service", "service_seq", "occurred_at", "recorded_at", "actor_type", "actor_id",
    "actor_display", "action", "outcome", "object_type", "object_id", "request_id", "source_ip", "user_agent",
]  # fmt: skip


def _csv_rows(queryset: Any) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*_CSV_COLUMNS, "changes", "metadata", "hash"])
    for row in queryset.values_list(*_CSV_COLUMNS, "changes", "metadata", "hash").iterator(chunk_size=2000):
        values = list(row)
        values[4] = values[4].isoformat()
        values[5] = values[5].isoformat()
        values[-3] = json.dumps(values[-3], sort_keys=True)
        values[-2] = json.dumps(values[-2], sort_keys=True)
        values[-1] = bytes(values[-1]).hex()
        writer.writerow(values)
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _jsonl_rows(queryset: Any) -> Iterator[str]:
    chunk: list[str] = []
    for canonical in queryset.values_list("canonical", flat=True).iterator(chunk_size=2000):
        chunk.append(canonical)
        if len(chunk) >= 1000:
            yield "\n".join(chunk) + "\n"
            chunk = []
    if chunk:
        yield "\n".join(chunk) + "\n"


class _FormatIsOurs(DefaultContentNegotiation):
    """``?format=`` names the export's file format here, not a DRF renderer."""

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


class AuditExportView(APIView):
    required_roles = AUDITORS
    required_scopes = READ
    content_negotiation_class = _FormatIsOurs

    @extend_schema(
        parameters=[*FILTERS, OpenApiParameter("format", OpenApiTypes.STR, enum=["jsonl", "csv"])],
        responses={(200, "application/x-ndjson"): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        kind = request.query_params.get("format", "jsonl")
        if kind not in ("jsonl", "csv"):
            raise InvalidFilter("format must be jsonl or csv.")
        queryset, used = filtered(request.query_params)
        queryset = queryset.order_by("seq")
        _audit("audit.events.exported", filters=used, format=kind)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        if kind == "csv":
            response = StreamingHttpResponse(_csv_rows(queryset), content_type="text/csv; charset=utf-8")
        else:
            response = StreamingHttpResponse(_jsonl_rows(queryset), content_type="application/x-ndjson")
        response["Content-Disposition"] = f'attachment; filename="atrium-audit-{stamp}.{kind}"'
        return response
