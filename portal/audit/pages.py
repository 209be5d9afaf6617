"""The audit admin's pages: the event list's paging, filters and banner, and an event's own page.

:mod:`portal.audit.admin` registers the ModelAdmins; what they show is built here, from the selectors
(:mod:`portal.audit.selectors`), and what they record goes through :mod:`portal.audit.services`.

The event list never counts the table: the unfiltered count comes from the gapless ``seq`` (``max - min + 1``,
two index probes) and any page is an index range (``seq <= top``), a filtered count stops at
:attr:`EstimatedCountPaginator.cap` rows, filters take their choices from a loose index scan instead of
``SELECT DISTINCT``, and search is exact (ids) or an indexed prefix (action), never an ``icontains`` scan. The
column headers do not sort: the only order is ``-seq``.

The list carries a banner with the cheap checks of the latest signed head (its signature, and that the chain's
Merkle root and last hash at its size are the signed ones); the full check is ``manage.py audit_verify``. An
event's page shows its before/after diff and its inclusion proof against the latest signed head, checked as an
outside auditor would (``verifier.check_proof``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Page, Paginator
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode

from portal.audit import selectors
from portal.audit.models import AuditEvent
from portal.ui.links import trace_url

FULL_CHECK_COMMAND = "python manage.py audit_verify"
# What the event list accepts in its query string: its own filters' parameters, and exact lookups on indexed
# columns (the event page links to them). Anything else (?metadata__contains=, ?canonical__icontains=) is a 400.
ALLOWED_LOOKUPS = frozenset(
    {"service", "outcome", "actor_type", "request_id", "actor_id", "object_type", "object_id", "event_id", "action"}
)
# What the list never needs to read (large, or only shown on an event's own page).
LIST_DEFERRED = ("canonical", "changes", "metadata", "leaf_hash", "hash", "prev_hash", "user_agent", "source_ip")
_MAX_RECORDED_PARAMS = 20
_MAX_RECORDED_VALUE = 200


# ------------------------------------------------------------------------------ pagination


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
        estimate = selectors.table_estimate(self.object_list.model._meta.db_table)
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
        return [(name, name) for name in selectors.distinct_values("service")]


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


# ------------------------------------------------------------------------------- the list


def list_metadata(request: HttpRequest) -> dict[str, Any]:
    """The list's filters, search and page, as recorded in ``audit.admin.listed`` (bounded in size)."""
    params: dict[str, Any] = {}
    for key, values in list(request.GET.lists())[:_MAX_RECORDED_PARAMS]:
        trimmed = [v[:_MAX_RECORDED_VALUE] for v in values]
        params[key[:_MAX_RECORDED_VALUE]] = trimmed[0] if len(trimmed) == 1 else trimmed
    search = params.pop("q", "")
    page = params.pop("p", "")
    return {"filters": params, "search": search, "page": page}


def list_context(*, can_view: bool) -> dict[str, Any]:
    """What the event list adds to the changelist: the latest head's banner (for those who may see it)."""
    if not can_view:
        return {}
    return {"audit_status": selectors.head_status(), "full_check_command": FULL_CHECK_COMMAND}


def trace_link(value: str) -> str:
    """``value`` linked to its trace (a list cell), or "" for none."""
    return format_html('<a href="{}" class="audit-trace-link">{}</a>', trace_url(value), value) if value else ""


def event_time(moment: dt.datetime) -> str:
    """An event's time in the list: UTC, to the second; the full time (microseconds) on hover."""
    utc = moment.astimezone(dt.UTC)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        utc.isoformat(),
        utc.isoformat(timespec="microseconds"),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
    )


def actor_cell(event: AuditEvent) -> str:
    """Who acted, as they were shown (their id on hover when it says more), and their kind."""
    shown = event.actor_display or event.actor_id or "—"
    return format_html(
        '<span title="{}">{}</span> <span class="audit-quiet">{}</span>',
        f"{event.actor_type} {event.actor_id}".strip(),
        shown,
        event.actor_type,
    )


def object_cell(event: AuditEvent) -> str:
    """The object's type and its id, linked to the id's trace."""
    if not event.object_id:
        return event.object_type or ""
    return format_html('<span class="audit-quiet">{}</span> {}', event.object_type, trace_link(event.object_id))


# --------------------------------------------------------------------------- an event's page


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


def event_page_context(*, event: AuditEvent) -> dict[str, Any]:
    """Everything the event's page shows about ``event``, computed here (the template only lays it out)."""
    try:
        body = json.loads(event.canonical)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = None
    list_url = reverse("admin:audit_auditevent_changelist")

    def filtered(**params: str) -> str:
        return f"{list_url}?{urlencode(params)}"

    return {
        "title": f"Audit event #{event.seq}",
        "subtitle": event.action,
        "event": event,
        "list_url": list_url,
        "request_url": filtered(request_id=event.request_id) if event.request_id else "",
        "actor_url": filtered(actor_id=event.actor_id) if event.actor_id else "",
        "object_url": filtered(object_type=event.object_type, object_id=event.object_id) if event.object_id else "",
        "request_trace_url": trace_url(event.request_id),
        "object_trace_url": trace_url(event.object_id),
        "change_rows": change_rows(event.changes),
        "metadata_json": json.dumps(event.metadata, indent=2, sort_keys=True, ensure_ascii=False),
        "leaf_hash_hex": bytes(event.leaf_hash).hex(),
        "hash_hex": bytes(event.hash).hex(),
        "prev_hash_hex": bytes(event.prev_hash).hex(),
        "chain_link_ok": selectors.event_chain_link_ok(event=event),
        "mismatches": selectors.event_column_mismatches(event=event, body=body) if body is not None else ["canonical"],
        "proof": selectors.event_proof_check(event=event, body=body),
        "full_check_command": FULL_CHECK_COMMAND,
    }
