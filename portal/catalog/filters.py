"""Filters of the catalog's lists (django-filter FilterSets), shared by the API and whatever page lists the same.

A value a filter cannot take (``?tier=9``, ``?status=sleepy``, ``?since=yesterday``) is a field error: the
API answers ``400 validation_error`` with one entry per bad parameter, never a 500 or an unfiltered list.
"""

from __future__ import annotations

import datetime as dt

import django_filters
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.catalog.models import HealthCheck, HealthStatus, Instance, InstanceStatus, Lifecycle, Service
from portal.catalog.status import STATUSES, heartbeat_seconds, service_status
from services.kit.timestamps import UTCDateTimeFilter


class ServiceFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_q", help_text="Slug or display name contains (any case).")
    team = django_filters.CharFilter(field_name="owner__slug", help_text="The owner team's slug.")
    lifecycle = django_filters.ChoiceFilter(choices=Lifecycle.choices)
    tier = django_filters.TypedChoiceFilter(
        choices=[(n, str(n)) for n in (1, 2, 3)], coerce=int, help_text="1 (most critical) to 3."
    )
    tag = django_filters.CharFilter(method="filter_tag", help_text="Services carrying this tag.")
    # Last: the other filters narrow what it has to read.
    status = django_filters.ChoiceFilter(
        choices=[(s, s) for s in STATUSES],
        method="filter_status",
        help_text="The derived status (latest health check and instances' heartbeats).",
    )

    class Meta:
        model = Service
        fields = ["q", "team", "lifecycle", "tier", "tag", "status"]

    def filter_q(self, queryset: QuerySet[Service], name: str, value: str) -> QuerySet[Service]:
        return queryset.filter(Q(slug__icontains=value) | Q(display_name__icontains=value))

    def filter_tag(self, queryset: QuerySet[Service], name: str, value: str) -> QuerySet[Service]:
        return queryset.filter(tags__contains=[value])

    def filter_status(self, queryset: QuerySet[Service], name: str, value: str) -> QuerySet[Service]:
        # No column holds it (status.py derives it on read), so derive it for the candidates (a catalog holds
        # tens or hundreds of services): two queries, whatever the count.
        now = timezone.now()
        candidates = (
            queryset.select_related(None)
            .prefetch_related(None)
            .only("id", "health_status")
            .prefetch_related("instances")
        )
        wanted = [s.id for s in candidates if service_status(s, s.instances.all(), now=now) == value]
        return queryset.filter(id__in=wanted)


class InstanceFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        choices=InstanceStatus.choices,
        method="filter_status",
        help_text="The derived status: critical as soon as three heartbeats are missed; gone as marked.",
    )

    class Meta:
        model = Instance
        fields = ["status"]

    def filter_status(self, queryset: QuerySet[Instance], name: str, value: str) -> QuerySet[Instance]:
        # status.instance_status, as a query (a service may keep many gone instances: filtered in the database).
        if value == InstanceStatus.GONE:
            return queryset.filter(status=InstanceStatus.GONE)
        stale = Q(last_heartbeat__lt=timezone.now() - dt.timedelta(seconds=3 * heartbeat_seconds()))
        live = queryset.exclude(status=InstanceStatus.GONE)
        return live.filter(stale) if value == InstanceStatus.CRITICAL else live.exclude(stale)


class HealthCheckFilterSet(django_filters.FilterSet):
    since = UTCDateTimeFilter(field_name="checked_at", lookup_expr="gte", help_text="Checked at or after (ISO 8601).")
    until = UTCDateTimeFilter(field_name="checked_at", lookup_expr="lt", help_text="Checked before (ISO 8601).")
    status = django_filters.ChoiceFilter(choices=HealthStatus.choices)

    class Meta:
        model = HealthCheck
        fields = ["since", "until", "status"]
