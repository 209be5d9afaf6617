"""The audit trail in the admin: read-only for everyone, cheap at millions of rows, and itself audited.

Nobody adds, changes or deletes audit rows here, not even a superuser (the sequencer alone writes
them; PostgreSQL triggers refuse the rest anyway). This module holds the ModelAdmins only: the event
list's paging, filters and banner and an event's own page are built in :mod:`portal.audit.pages` from
the selectors. Listing events and opening one are themselves recorded as audit events
(``audit.admin.listed`` / ``audit.admin.viewed``); refused attempts are recorded with outcome ``failure``.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.template.response import TemplateResponse
from django.utils.html import format_html

from portal.audit import pages, selectors, services
from portal.audit.models import AuditArchive, AuditEvent, AuditHead, AuditRejected


class ReadOnlyAuditAdmin(admin.ModelAdmin):
    """Nothing can be added, changed or deleted, by anyone; viewing needs the model's view permission."""

    actions = None
    sortable_by: tuple[str, ...] = ()
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would COUNT every choice over the table
    paginator = pages.EstimatedCountPaginator
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
    # Times to the second (UTC), and the actor and object kept whole at 1280 px: no navigation sidebar, one
    # column for the object's type and id, long ids wrapped (portal/audit/templates/admin/audit/_styles.html).
    list_display = [
        "seq",
        "occurred",
        "service",
        "action",
        "outcome",
        "actor_shown",
        "object_shown",
        "request_link",
    ]
    list_display_links = ["seq"]
    list_filter = [pages.ServiceFilter, pages.OutcomeFilter, pages.ActorTypeFilter]
    search_fields = ["event_id"]  # shows the search box; get_search_results does the real (exact) search
    search_help_text = (
        "Exact event id, request id, object id or actor id; a sequence number (#123); "
        "or the start of an action (ledger.transaction)."
    )
    ordering = ["-seq"]
    paginator = pages.AuditEventPaginator
    change_list_template = "admin/audit/auditevent/change_list.html"
    detail_template = "admin/audit/auditevent/detail.html"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return pages.AuditEventChangeList

    @admin.display(description="occurred (UTC)")
    def occurred(self, obj: AuditEvent) -> str:
        return pages.event_time(obj.occurred_at)

    @admin.display(description="actor")
    def actor_shown(self, obj: AuditEvent) -> str:
        return pages.actor_cell(obj)

    @admin.display(description="object")
    def object_shown(self, obj: AuditEvent) -> str:
        return pages.object_cell(obj)

    @admin.display(description="request id")
    def request_link(self, obj: AuditEvent) -> str:
        return pages.trace_link(obj.request_id)

    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest | None = None) -> bool:
        # Only exact, indexed lookups: a crafted ?metadata__contains= must not scan millions of rows.
        if lookup == "object_id":  # indexed after object_type only
            return request is not None and "object_type" in request.GET
        return lookup in pages.ALLOWED_LOOKUPS

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        return selectors.event_search(queryset=queryset, term=search_term), False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        metadata = pages.list_metadata(request)
        try:
            with transaction.atomic():
                context = {
                    **pages.list_context(can_view=self.has_view_permission(request)),
                    "is_nav_sidebar_enabled": False,  # the columns need the width
                    **(extra_context or {}),
                }
                response = super().changelist_view(request, context)
                if response.status_code == 200:
                    services.access_record(action="audit.admin.listed", object_id="audit_event", metadata=metadata)
        except PermissionDenied:
            services.access_record(
                action="audit.admin.listed",
                outcome="failure",
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
            services.access_record(
                action="audit.admin.viewed",
                outcome="failure",
                object_type="audit_event",
                object_id=event.event_id if event is not None else unquote(object_id)[:200],
                metadata={"reason": "permission_denied"},
            )
            raise PermissionDenied
        if event is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        with transaction.atomic():
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "has_view_permission": True,
                **pages.event_page_context(event=event),
            }
            services.access_record(
                action="audit.admin.viewed",
                object_type="audit_event",
                object_id=event.event_id,
                metadata={"seq": event.seq},
            )
        return TemplateResponse(request, self.detail_template, {**context, **(extra_context or {})})


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
        return selectors.head_signature_valid(head=obj)


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
