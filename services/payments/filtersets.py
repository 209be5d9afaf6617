from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from services.kit.timestamps import UTCDateTimeFilter
from services.payments.models import Payment, PaymentStatus


class PaymentFilterSet(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=PaymentStatus.choices)
    account = django_filters.CharFilter(method="filter_account", help_text="Source or destination account.")
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Payment
        fields = ["status", "currency"]

    def filter_account(self, queryset: QuerySet[Payment], name: str, value: str) -> QuerySet[Payment]:
        return queryset.filter(Q(source_account=value) | Q(destination_account=value))
