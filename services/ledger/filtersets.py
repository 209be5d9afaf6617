from __future__ import annotations

import django_filters

from services.kit.timestamps import UTCDateTimeFilter
from services.ledger.models import Account, Posting, Transaction


class AccountFilterSet(django_filters.FilterSet):
    class Meta:
        model = Account
        fields = ["currency", "status", "code"]


class TransactionFilterSet(django_filters.FilterSet):
    account = django_filters.CharFilter(method="filter_account")
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")
    reference_prefix = django_filters.CharFilter(field_name="reference", lookup_expr="startswith")

    class Meta:
        model = Transaction
        fields = ["reference", "status"]

    def filter_account(self, queryset, name: str, value: str):  # noqa: ANN001, ANN201
        return queryset.filter(postings__account_id=value).distinct()


class PostingFilterSet(django_filters.FilterSet):
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Posting
        fields = []
