"""The job records in the admin, read-only: jobs open in the dashboard's pages (whose lists are keyset-paged,
where the admin's change list would count a table of millions); workers are a short list, kept here too."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from portal.jobs import selectors
from portal.jobs.models import Job, Worker

# Admin change-list filters that mean the same on the dashboard's task list.
_LIST_FILTERS = {"state": "state", "state__exact": "state", "queue": "queue", "queue__exact": "queue", "q": "q"}


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(ReadOnly):
    """Opens the dashboard: its task list for the list, a task's page for a job."""

    list_display = ["task_id", "name", "state", "queue", "seen_at"]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        query = {_LIST_FILTERS[k]: v for k, v in request.GET.items() if k in _LIST_FILTERS and v}
        return HttpResponseRedirect(reverse("jobs_pages:tasks") + (f"?{urlencode(query)}" if query else ""))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        found = selectors.job_task_id(int(object_id)) if object_id.isdigit() else None
        task_id = found or object_id
        return HttpResponseRedirect(reverse("jobs_pages:task", args=[task_id]))


@admin.register(Worker)
class WorkerAdmin(ReadOnly):
    list_display = [
        "hostname", "status", "service", "pool", "concurrency", "active", "reserved", "processed", "sw_version",
        "last_heartbeat", "tasks",
    ]  # fmt: skip
    list_filter = ["status", "service"]
    search_fields = ["hostname"]
    readonly_fields = [f.name for f in Worker._meta.fields]

    @admin.display(description="Tasks")
    def tasks(self, worker: Worker) -> str:
        url = reverse("jobs_pages:tasks") + "?" + urlencode({"worker": worker.hostname})
        return format_html('<a href="{}">its tasks</a>', url)
