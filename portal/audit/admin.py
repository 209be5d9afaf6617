"""The audit trail in the admin: read-only for everyone, cheap at millions of rows, and itself audited.

Nobody adds, changes or deletes audit rows here, not even a superuser (the sequencer alone writes
them; PostgreSQL triggers refuse the rest anyway). The event list never counts the table: the
unfiltered count comes from the gapless ``seq`` (``max - min + 1``, two index probes) and any page
is an index range (``seq <= top``), a filtered count stops at :attr:`EstimatedCountPaginator.cap`
rows, filters take their choices from a loose index scan instead of ``SELECT DISTINCT``, and search
is exact (ids) or an indexed prefix (action), never an ``icontains`` scan. The column headers do
not sort: the only order is ``-seq``.

The changelist carries a banner with the cheap checks of the latest signed head (its signature,
and that the chain's Merkle root and last hash at its size are the signed ones); the full check is
``manage.py audit_verify``. An event's page shows its before/after diff and its inclusion proof
against the latest signed head, checked as an outside auditor would (``verifier.check_proof``).
Listing events and opening one are themselves recorded as audit events (``audit.admin.listed`` /
``audit.admin.viewed``); refused attempts are recorded with outcome ``failure``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.core.paginator import Page, Paginator
from django.db import connection, transaction
from django.db.models import Max, Min, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode

from portal.audit import heads, verifier
from portal.audit.chain import NodeSource, frontier_root, node_lookup
from portal.audit.models import AuditArchive, AuditChainState, AuditEvent, AuditHead, AuditRejected
from services.kit.audit import audit_record

T = TypeVar("T")

FULL_CHECK_COMMAND = "python manage.py audit_verify"
# What the event list accepts in its query string: its own filters' parameters, and exact lookups on indexed
# columns (the event page links to them). Anything else (?metadata__contains=, ?canonical__icontains=) is a 400.
ALLOWED_LOOKUPS = frozenset(
    {"service", "outcome", "actor_type", "request_id", "actor_id", "object_type", "object_id", "event_id", "action"}
)
# What the list never needs to read (large, or only shown on an event's own page).
LIST_DEFERRED = ("canonical", "changes", "metadata", "leaf_hash", "hash", "prev_hash", "user_agent", "source_ip")
ACTION_PREFIX = re.compile(r"[a-z][a-z0-9_.]*")
# Columns whose distinct values are read by a loose index scan (each leads an index of audit_event).
_DISTINCT_COLUMNS = frozenset({"service", "object_type"})
_MAX_CHOICES = 200
_MAX_RECORDED_PARAMS = 20
_MAX_RECORDED_VALUE = 200


# ------------------------------------------------------------------------------ pagination


def table_estimate(table: str) -> int:
    """The planner's row estimate for ``table`` (``pg_class.reltuples``; 0 if never analysed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    return max(int(row[0]), 0) if row and row[0] is not None else 0


class EstimatedCountPaginator(Paginator):
    """A paginator that never ``COUNT(*)``s a whole table.

    Unfiltered: the planner's estimate (``pg_class.reltuples``), exact below :attr:`cap`. Filtered:
    an exact count that stops after :attr:`cap` rows; beyond it the list pages through the first
    ``cap`` rows and says "more than" (narrow the filter to see older rows).
    """

    cap = 10_000

    def __init__(self, object_list: QuerySet, per_page: int, orphans: int = 0, allow_empty_first_page: bool = True):
        super().__init__(object_list, per_page, orphans, allow_empty_first_page)
        self.estimated = False
        self.capped = False

    @property
    def unfiltered(self) -> bool:
        return not self.object_list.query.where

    @cached_property
    def count(self) -> int:
        return self.unfiltered_count() if self.unfiltered else self.capped_count()

    def capped_count(self) -> int:
        found = self.object_list.order_by().values("pk")[: self.cap + 1].count()
        if found > self.cap:
            self.capped = True
            return self.cap
        return found

    def unfiltered_count(self) -> int:
        estimate = table_estimate(self.object_list.model._meta.db_table)
        if estimate > self.cap:
            self.estimated = True
            return estimate
        return self.capped_count()


class AuditEventPaginator(EstimatedCountPaginator):
    """Unfiltered, ``seq`` is gapless (archival only removes a prefix), so the count is exact and free:
    ``max(seq) - min(seq) + 1``; and page ``n`` is the index range ``seq <= max - (n - 1) * per_page``
    rather than an ``OFFSET`` that would walk every newer row."""

    _top: int | None = None

    def unfiltered_count(self) -> int:
        bounds = self.object_list.order_by().aggregate(low=Min("seq"), high=Max("seq"))
        if bounds["high"] is None:
            self._top = 0
            return 0
        self._top = bounds["high"]
        return bounds["high"] - bounds["low"] + 1

    def page(self, number: int | str) -> Page:
        number = self.validate_number(number)
        ordering = tuple(self.object_list.query.order_by)
        if self._top is None or ordering not in (("-seq",), ("-pk",)):
            return super().page(number)
        top = self._top - (number - 1) * self.per_page
        return self._get_page(self.object_list.filter(seq__lte=top)[: self.per_page], number, self)


# --------------------------------------------------------------------------------- filters


def distinct_values(column: str, limit: int = _MAX_CHOICES) -> list[str]:
    """Distinct values of an indexed column of ``audit_event`` by a loose index scan: one index probe
    per value instead of a ``SELECT DISTINCT`` over every row."""
    if column not in _DISTINCT_COLUMNS:
        raise ValueError(f"no loose index scan for {column!r}")
    sql = (
        f"WITH RECURSIVE t(v) AS ((SELECT {column} FROM audit_event ORDER BY {column} LIMIT 1) "  # noqa: S608
        f"UNION ALL SELECT (SELECT e.{column} FROM audit_event e WHERE e.{column} > t.v ORDER BY e.{column} LIMIT 1) "
        "FROM t WHERE t.v IS NOT NULL) SELECT v FROM t WHERE v IS NOT NULL LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


class _ChoiceFilter(admin.SimpleListFilter):
    options: tuple[tuple[str, str], ...] = ()

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(self.options)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.parameter_name: value}) if value else queryset


class ServiceFilter(_ChoiceFilter):
    title = "service"
    parameter_name = "service"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name in distinct_values("service")]


class OutcomeFilter(_ChoiceFilter):
    title = "outcome"
    parameter_name = "outcome"
    options = (("success", "success"), ("failure", "failure"))


class ActorTypeFilter(_ChoiceFilter):
    title = "actor type"
    parameter_name = "actor_type"
    options = (("user", "user"), ("client", "client"), ("system", "system"))


class AuditEventChangeList(ChangeList):
    """Always newest first (the one order an index serves), narrow rows, and never an unbounded page."""

    exact_lookups: list[tuple[str, str]] = []

    def get_ordering(self, request: HttpRequest, queryset: QuerySet) -> list[str]:
        return ["-seq"]

    def get_filters(self, request: HttpRequest) -> tuple[Any, ...]:
        specs, has_filters, remaining, duplicates, active = super().get_filters(request)
        # ?request_id=… (the event page's links) narrows the list like a filter: say so, and count as one.
        self.exact_lookups = [
            (key, ", ".join(str(v) for v in value) if isinstance(value, list) else str(value))
            for key, value in sorted(remaining.items())
        ]
        return specs, has_filters, remaining, duplicates, active or bool(remaining)

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        return super().get_queryset(request, exclude_parameters).defer(*LIST_DEFERRED)

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # "Show all" and single pages take the whole queryset; bound it in case rows arrived since the count.
        if not self.result_list.query.is_sliced:
            self.result_list = self.result_list[: max(self.list_per_page, self.list_max_show_all)]


# ------------------------------------------------------------------------- proofs and heads


def with_prefetched_nodes(compute: Callable[[Callable[[int, int], bytes]], T]) -> T:
    """Run a verifier function over ``audit_node`` with every node it needs loaded in one query.

    Which nodes a proof or root needs depends only on the indexes and sizes, never on the hashes,
    so a dry run with placeholder hashes lists them.
    """
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return verifier.ZERO_HASH

    compute(record)
    source = NodeSource()
    source.cache.update(node_lookup(wanted))
    return compute(source)


def audit_public_key() -> bytes | None:
    """The portal's audit public key (PEM), or None where the signing key is not configured."""
    try:
        return heads.public_key_pem()
    except (ImproperlyConfigured, OSError, ValueError):
        return None


@dataclass
class HeadStatus:
    """The cheap checks of the latest signed head shown on the event list (not a full verification)."""

    head: AuditHead | None = None
    chain_size: int = 0
    signature_ok: bool = False
    chain_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.head is not None and self.signature_ok and self.chain_ok

    @property
    def uncovered(self) -> int:
        """Events recorded after the latest head (covered by the next one)."""
        return max(self.chain_size - (self.head.tree_size if self.head else 0), 0)


def latest_head() -> AuditHead | None:
    return AuditHead.objects.order_by("-tree_size").first()


def head_status() -> HeadStatus:
    """Latest head: does its signature verify, and does the chain still have its root and last hash?"""
    head = latest_head()  # before the chain state: the chain only grows, so it is never read shorter than a head
    state = AuditChainState.objects.filter(id=1).first()
    status = HeadStatus(head=head, chain_size=state.size if state else 0)
    if head is None:
        return status
    pem = audit_public_key()
    if pem is None:
        status.problems.append("The audit signing key is not configured here, so the signature cannot be checked.")
    else:
        status.signature_ok = verifier.verify_head_signature(heads.head_as_dict(head), pem)
        if not status.signature_ok:
            status.problems.append("The head's signature does not verify with the portal's audit key (forged head).")
    status.chain_ok = _head_matches_chain(head, state, status.problems)
    return status


def _head_matches_chain(head: AuditHead, state: AuditChainState | None, problems: list[str]) -> bool:
    size = head.tree_size
    chain_size = state.size if state else 0
    if state is None or chain_size < size:
        problems.append(f"The chain holds {chain_size} events, fewer than the {size} the head signs (events removed).")
        return False
    last: bytes | None
    if chain_size == size:
        root, last = frontier_root(state.frontier), bytes(state.last_hash)
    else:
        try:
            root = with_prefetched_nodes(lambda nodes: verifier.subtree_root(0, size, nodes))
        except LookupError as exc:
            problems.append(f"The Merkle nodes for the head's tree are missing ({exc}).")
            return False
        found = AuditEvent.objects.filter(seq=size).values_list("hash", flat=True).first()
        last = bytes(found) if found is not None else None  # None: archived, only the root is compared
    ok = True
    if root.hex() != head.root_hash:
        problems.append(f"The chain's Merkle root at size {size} is not the head's root hash (log rewritten).")
        ok = False
    if last is not None and last.hex() != head.last_hash:
        problems.append(f"The chain hash of event {size} is not the head's last hash (log rewritten).")
        ok = False
    return ok


@dataclass
class EventProof:
    """An event's inclusion proof against the latest signed head, checked like an outside auditor would."""

    head: AuditHead | None = None
    covered: bool = False
    leaf_index: int = 0
    path: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.covered and not self.problems


def event_proof(event: AuditEvent, body: dict[str, Any] | None) -> EventProof:
    head = latest_head()
    proof = EventProof(head=head, leaf_index=event.seq - 1)
    if head is None or head.tree_size < event.seq:
        return proof
    proof.covered = True
    if body is None:
        proof.problems.append("The stored canonical JSON does not parse.")
        return proof
    try:
        path = with_prefetched_nodes(lambda nodes: verifier.inclusion_path(event.seq - 1, head.tree_size, nodes))
    except LookupError as exc:
        proof.problems.append(f"A Merkle node of the proof is missing ({exc}).")
        return proof
    proof.path = [p.hex() for p in path]
    pem = audit_public_key()
    if pem is None:
        proof.problems.append("The audit signing key is not configured here, so the head cannot be checked.")
        return proof
    document = {
        "event": body,
        "leaf_index": event.seq - 1,
        "leaf_hash": bytes(event.leaf_hash).hex(),
        "proof": proof.path,
        "head": heads.head_as_dict(head),
    }
    proof.problems.extend(verifier.check_proof(document, pem))
    return proof


def _parse_time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def column_mismatches(event: AuditEvent, body: dict[str, Any]) -> list[str]:
    """Columns of the row (what the admin shows and searches) that disagree with the hashed JSON."""
    expected: dict[str, Any] = {
        "seq": event.seq,
        "id": event.event_id,
        "service": event.service,
        "service_seq": event.service_seq,
        "actor": {"type": event.actor_type, "id": event.actor_id, "display": event.actor_display},
        "action": event.action,
        "outcome": event.outcome,
        "object": {"type": event.object_type, "id": event.object_id},
        "request_id": event.request_id,
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "changes": event.changes,
        "metadata": event.metadata,
    }
    wrong = [name for name, value in expected.items() if body.get(name) != value]
    for name in ("occurred_at", "recorded_at"):
        if _parse_time(body.get(name)) != getattr(event, name):
            wrong.append(name)
    return wrong


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def change_rows(changes: Any) -> list[dict[str, Any]]:
    """``{field: [before, after]}`` as table rows (values as text; None marked as absent)."""
    if not isinstance(changes, dict):
        return []
    rows = []
    for name, pair in changes.items():
        before, after = pair if isinstance(pair, list) and len(pair) == 2 else (None, pair)
        rows.append(
            {
                "field": name,
                "before": _shown(before),
                "after": _shown(after),
                "before_absent": before is None,
                "after_absent": after is None,
            }
        )
    return rows


# --------------------------------------------------------------------------- model admins


def _query_metadata(request: HttpRequest) -> dict[str, Any]:
    """The list's filters, search and page, as recorded in ``audit.admin.listed`` (bounded in size)."""
    params: dict[str, Any] = {}
    for key, values in list(request.GET.lists())[:_MAX_RECORDED_PARAMS]:
        trimmed = [v[:_MAX_RECORDED_VALUE] for v in values]
        params[key[:_MAX_RECORDED_VALUE]] = trimmed[0] if len(trimmed) == 1 else trimmed
    search = params.pop("q", "")
    page = params.pop("p", "")
    return {"filters": params, "search": search, "page": page}


class ReadOnlyAuditAdmin(admin.ModelAdmin):
    """Nothing can be added, changed or deleted, by anyone; viewing needs the model's view permission."""

    actions = None
    sortable_by: tuple[str, ...] = ()
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would COUNT every choice over the table
    paginator = EstimatedCountPaginator
    list_per_page = 50
    list_max_show_all = 200

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAuditAdmin):
    list_display = [
        "seq",
        "occurred_at",
        "service",
        "action",
        "outcome",
        "actor_display",
        "object_type",
        "object_id",
        "request_id",
    ]
    list_display_links = ["seq"]
    list_filter = [ServiceFilter, OutcomeFilter, ActorTypeFilter]
    search_fields = ["event_id"]  # shows the search box; get_search_results does the real (exact) search
    search_help_text = (
        "Exact event id, request id, object id or actor id; a sequence number (#123); "
        "or the start of an action (ledger.transaction)."
    )
    ordering = ["-seq"]
    paginator = AuditEventPaginator
    change_list_template = "admin/audit/auditevent/change_list.html"
    detail_template = "admin/audit/auditevent/detail.html"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AuditEventChangeList

    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest | None = None) -> bool:
        # Only exact, indexed lookups: a crafted ?metadata__contains= must not scan millions of rows.
        if lookup == "object_id":  # indexed after object_type only
            return request is not None and "object_type" in request.GET
        return lookup in ALLOWED_LOOKUPS

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(event_id=term) | Q(request_id=term) | Q(actor_id=term)
        object_types = distinct_values("object_type")
        if object_types:  # the object index leads with object_type: name every type so the index serves it
            match |= Q(object_type__in=object_types, object_id=term)
        if ACTION_PREFIX.fullmatch(term):
            match |= Q(action__startswith=term)  # LIKE 'term%' on the varchar_pattern_ops index
        number = term.removeprefix("#")
        if number.isdigit() and len(number) < 19:
            match |= Q(seq=int(number))
        return queryset.filter(match), False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        metadata = _query_metadata(request)
        try:
            with transaction.atomic():
                context = dict(extra_context or {})
                if self.has_view_permission(request):
                    context["audit_status"] = head_status()
                    context["full_check_command"] = FULL_CHECK_COMMAND
                response = super().changelist_view(request, context)
                if response.status_code == 200:
                    audit_record(
                        "audit.admin.listed", object_type="audit_log", object_id="audit_event", metadata=metadata
                    )
        except PermissionDenied:
            with transaction.atomic():
                audit_record(
                    "audit.admin.listed",
                    outcome="failure",
                    object_type="audit_log",
                    object_id="audit_event",
                    metadata={**metadata, "reason": "permission_denied"},
                )
            raise
        return response

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponseBase:
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied  # nothing here can be changed
        event = self.get_object(request, unquote(object_id))
        if not self.has_view_permission(request, event):
            with transaction.atomic():
                audit_record(
                    "audit.admin.viewed",
                    outcome="failure",
                    object_type="audit_event",
                    object_id=event.event_id if event is not None else unquote(object_id)[:200],
                    metadata={"reason": "permission_denied"},
                )
            raise PermissionDenied
        if event is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        with transaction.atomic():
            context = self.detail_context(request, event)
            audit_record(
                "audit.admin.viewed", object_type="audit_event", object_id=event.event_id, metadata={"seq": event.seq}
            )
        return TemplateResponse(request, self.detail_template, {**context, **(extra_context or {})})

    def detail_context(self, request: HttpRequest, event: AuditEvent) -> dict[str, Any]:
        """Everything the event's page shows, computed here (the template only lays it out)."""
        try:
            body = json.loads(event.canonical)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = None
        list_url = reverse("admin:audit_auditevent_changelist")

        def filtered(**params: str) -> str:
            return f"{list_url}?{urlencode(params)}"

        data = event.canonical.encode("utf-8")
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Audit event #{event.seq}",
            "subtitle": event.action,
            "has_view_permission": True,
            "event": event,
            "list_url": list_url,
            "request_url": filtered(request_id=event.request_id) if event.request_id else "",
            "actor_url": filtered(actor_id=event.actor_id) if event.actor_id else "",
            "object_url": (
                filtered(object_type=event.object_type, object_id=event.object_id) if event.object_id else ""
            ),
            "change_rows": change_rows(event.changes),
            "metadata_json": json.dumps(event.metadata, indent=2, sort_keys=True, ensure_ascii=False),
            "leaf_hash_hex": bytes(event.leaf_hash).hex(),
            "hash_hex": bytes(event.hash).hex(),
            "prev_hash_hex": bytes(event.prev_hash).hex(),
            "chain_link_ok": bytes(event.hash) == verifier.chain_hash(data, bytes(event.prev_hash)),
            "mismatches": column_mismatches(event, body) if body is not None else ["canonical"],
            "proof": event_proof(event, body),
            "full_check_command": FULL_CHECK_COMMAND,
        }


@admin.register(AuditHead)
class AuditHeadAdmin(ReadOnlyAuditAdmin):
    list_display = ["tree_size", "timestamp", "root_hash", "key_id", "signature_valid", "created_at"]
    fields = [
        "tree_size",
        "timestamp",
        "root_hash",
        "last_hash",
        "key_id",
        "signature",
        "signature_valid",
        "created_at",
    ]
    readonly_fields = ["signature_valid", "created_at"]
    ordering = ["-tree_size"]

    @admin.display(description="signature valid", boolean=True)
    def signature_valid(self, obj: AuditHead) -> bool | None:
        pem = audit_public_key()
        return None if pem is None else verifier.verify_head_signature(heads.head_as_dict(obj), pem)


@admin.register(AuditRejected)
class AuditRejectedAdmin(ReadOnlyAuditAdmin):
    list_display = ["id", "received_at", "short_reason"]
    fields = ["id", "received_at", "reason", "payload_json"]
    readonly_fields = ["id", "received_at", "payload_json"]
    ordering = ["-id"]

    @admin.display(description="reason")
    def short_reason(self, obj: AuditRejected) -> str:
        return obj.reason if len(obj.reason) <= 120 else f"{obj.reason[:117]}..."

    @admin.display(description="payload")
    def payload_json(self, obj: AuditRejected) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True, ensure_ascii=False))


@admin.register(AuditArchive)
class AuditArchiveAdmin(ReadOnlyAuditAdmin):
    list_display = ["last_seq", "first_seq", "events", "file_name", "file_bytes", "created_at"]
    fields = [
        "first_seq",
        "last_seq",
        "events",
        "path",
        "file_sha256",
        "file_bytes",
        "head_root_hash",
        "head_last_hash",
        "created_at",
    ]
    readonly_fields = ["created_at"]
    ordering = ["-last_seq"]

    @admin.display(description="file")
    def file_name(self, obj: AuditArchive) -> str:
        return obj.path.rsplit("/", 1)[-1]
