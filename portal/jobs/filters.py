"""Filters of the job dashboard's task lists (a django-filter FilterSet), shared by the API and the pages.

The FilterSet validates (``?state=sleepy`` or ``?since=yesterday`` is a field error: the API answers
``400 validation_error`` with one entry per bad parameter, never a 500 or an unfiltered list) and turns the query
into a :class:`~portal.jobs.selectors.TaskFilters`; what each filter means is
:func:`~portal.jobs.selectors.jobs_filter`'s alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import django_filters
from django.db.models import QuerySet
from django_filters.utils import translate_validation

from portal.jobs.models import Job, JobState
from portal.jobs.selectors import TaskFilters, jobs_filter
from services.kit.timestamps import UTCDateTimeFilter


class TaskFilterSet(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=JobState.choices, help_text="The task's latest state.")
    queue = django_filters.CharFilter(help_text="The queue it was published to.")
    service = django_filters.CharFilter(help_text="The service whose worker runs it (ledger, payments, portal).")
    name = django_filters.CharFilter(help_text="The task name, exactly (payments.process).")
    since = UTCDateTimeFilter(field_name="seen_at", help_text="First seen at or after (ISO 8601).")
    until = UTCDateTimeFilter(field_name="seen_at", help_text="First seen before (ISO 8601).")
    request_id = django_filters.CharFilter(
        help_text="The request that published it (X-Request-ID), or that a batch job carried (marked linked)."
    )
    object_id = django_filters.CharFilter(help_text="An object a batch job carried (pay_…, txn_…).")
    q = django_filters.CharFilter(field_name="task_id", help_text="A task id, or its beginning.")
    exception_type = django_filters.CharFilter(help_text="The exception's class name (failed and retried tasks).")
    worker = django_filters.CharFilter(help_text="The worker node that received it (name@host).")

    class Meta:
        model = Job
        fields = [
            "state",
            "queue",
            "service",
            "name",
            "since",
            "until",
            "request_id",
            "object_id",
            "q",
            "exception_type",
            "worker",
        ]

    def task_filters(self) -> TaskFilters:
        """The validated filters (call ``is_valid()`` first)."""
        cleaned = self.form.cleaned_data
        return TaskFilters(**{name: cleaned.get(name) or TaskFilters.__dataclass_fields__[name].default
                              for name in self.filters})  # fmt: skip

    def filter_queryset(self, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset & jobs_filter(self.task_filters())


class FailureFilterSet(TaskFilterSet):
    """The task filters without the state (failures are failed tasks)."""

    state = None  # type: ignore[assignment]

    class Meta(TaskFilterSet.Meta):
        fields = [f for f in TaskFilterSet.Meta.fields if f != "state"]


def task_filters_parse(data: Mapping[str, Any], *, filterset: type[TaskFilterSet] = TaskFilterSet) -> TaskFilters:
    """The filters a query string (or any mapping of strings) asks for; a DRF ``ValidationError`` (400 field
    errors) for a value a filter cannot take."""
    found = filterset(data=data, queryset=Job.objects.none())
    if not found.is_valid():
        raise translate_validation(found.errors)
    return found.task_filters()
