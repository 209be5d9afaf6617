"""Filters of the webhooks lists (``GET /api/v1/messages``, ``GET /api/v1/attempts``)."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from services.kit.timestamps import UTCDateTimeFilter
from services.webhooks.models import Attempt, AttemptError, Message


class MessageFilterSet(django_filters.FilterSet):
    type = django_filters.CharFilter(help_text="An event type, e.g. payment.settled.")
    channel = django_filters.CharFilter(method="filter_channel", help_text="Messages on this channel.")
    object_id = django_filters.CharFilter(help_text="The object the message is about (its data.id: pay_…, txn_…).")
    request_id = django_filters.CharFilter(help_text="The request that caused the message.")
    after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte", help_text="Created at or after (ISO 8601).")
    before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt", help_text="Created before (ISO 8601).")

    class Meta:
        model = Message
        fields: list[str] = []

    def filter_channel(self, queryset: QuerySet[Message], name: str, value: str) -> QuerySet[Message]:
        return queryset.filter(channels__contains=[value])


class AttemptFilterSet(django_filters.FilterSet):
    endpoint = django_filters.CharFilter(field_name="endpoint_id", help_text="An endpoint id.")
    message = django_filters.CharFilter(field_name="message_id", help_text="A message id.")
    status = django_filters.NumberFilter(
        field_name="status_code",
        min_value=100,
        max_value=599,
        decimal_places=0,
        help_text="The HTTP status answered, e.g. 500.",
    )
    error = django_filters.ChoiceFilter(
        choices=[(value, value) for value in AttemptError.values if value],
        help_text="The kind of failure: timeout, connect, dns, tls, ssrf_blocked or status.",
    )
    after = UTCDateTimeFilter(field_name="at", lookup_expr="gte", help_text="Made at or after (ISO 8601).")
    before = UTCDateTimeFilter(field_name="at", lookup_expr="lt", help_text="Made before (ISO 8601).")

    class Meta:
        model = Attempt
        fields: list[str] = []
