"""Ledger admin: accounts and transactions browsable; postings read-only; nothing deletable.
Every page reads through the ledger's selectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from services.ledger import selectors
from services.ledger.models import Account, Posting, Transaction


class ReadOnlyAdmin(admin.ModelAdmin):
    # The selector listing the model's rows; the admin adds its filters, search and ordering.
    selector: Callable[[], QuerySet[Any]]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = type(self).selector()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PostingInline(admin.TabularInline):
    model = Posting
    fields = ["account", "direction", "amount", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Posting]:
        return selectors.posting_list()

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    """Accounts change only through the API's services (balances are derived from postings)."""

    selector = selectors.account_list

    list_display = ["id", "code", "name", "currency", "normal_balance", "status", "balance", "available", "created_at"]
    list_filter = ["currency", "status", "normal_balance"]
    search_fields = ["id", "code", "name"]
    show_full_result_count = False


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdmin):
    selector = selectors.transaction_list
    list_display = ["id", "reference", "status", "currency", "created_at", "posted_at", "voided_at"]
    list_filter = ["status", "currency"]
    search_fields = ["id", "reference", "=request_id"]
    inlines = [PostingInline]
    show_full_result_count = False


@admin.register(Posting)
class PostingAdmin(ReadOnlyAdmin):
    selector = selectors.posting_list
    list_display = ["id", "transaction", "account", "direction", "amount", "created_at"]
    list_filter = ["direction"]
    search_fields = ["account__id", "transaction__id", "transaction__reference"]
    list_select_related = ["transaction", "account"]
    show_full_result_count = False
