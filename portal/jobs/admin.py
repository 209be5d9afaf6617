"""The job records in the admin, read-only: jobs open in the dashboard's pages (whose lists are keyset-paged,
where the admin's change list would count a table of millions); workers are a short list, kept here too.

django-celery-beat's periodic task admin stays (edits are Django admin changes, audited as every admin change is),
but its bulk actions go through :mod:`portal.jobs.services`, audited like the dashboard's: its own ones update rows
with no audit trail, and its "run" finds only the tasks this process registered (not the ledger's or payments')."""

from __future__ import annotations

from typing import Any

import django_celery_beat.admin  # registers django-celery-beat's admin first, replaced below
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django_celery_beat.models import PeriodicTask
from kombu.exceptions import KombuError

from portal.jobs import selectors, services
from portal.jobs.models import Job, Worker
from services.kit.errors import DomainError

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


class PeriodicTaskAdmin(django_celery_beat.admin.PeriodicTaskAdmin):
    """django-celery-beat's admin, whose actions pause, resume and run through the dashboard's audited services."""

    actions = ["enable_tasks", "disable_tasks", "run_tasks"]

    def _each(self, request: HttpRequest, queryset: QuerySet[PeriodicTask], what: str, act: Any) -> None:
        done = []
        for name in queryset.order_by("name").values_list("name", flat=True):
            try:
                act(name=name)
            except DomainError as exc:
                self.message_user(request, f"{name}: {exc.detail}", level=messages.WARNING)
            except (KombuError, OSError) as exc:
                self.message_user(
                    request, f"{name}: the broker could not be reached ({type(exc).__name__}).", messages.ERROR
                )
            else:
                done.append(name)
        if done:
            self.message_user(request, f"{what}: {', '.join(done)}.")

    @admin.action(description="Resume selected periodic tasks (audited)", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._each(request, queryset.filter(enabled=False), "Resumed", services.periodic_resume)

    @admin.action(description="Pause selected periodic tasks (audited)", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._each(request, queryset.filter(enabled=True), "Paused", services.periodic_pause)

    @admin.action(description="Run selected periodic tasks now (audited)", permissions=["change"])
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._each(request, queryset, "Sent now", services.periodic_run)


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, PeriodicTaskAdmin)
