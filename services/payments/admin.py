"""Payments admin: screening rules are edited here (every change audited); payments and idempotency keys
are read-only, since they change only through the API and the workers' state machine."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from services.kit.errors import DomainError
from services.payments import selectors, services
from services.payments.models import (
    BlockedAccount,
    CurrencyLimit,
    IdempotencyKey,
    Payment,
    VelocityLimit,
)


class SelectorAdmin(admin.ModelAdmin):
    """Reads its rows through a selector; the admin adds its filters, search and ordering."""

    selector: Callable[[], QuerySet[Any]]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = type(self).selector()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset


class ReadOnlyAdmin(SelectorAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    selector = selectors.payment_list
    list_display = [
        "id",
        "status",
        "amount",
        "currency",
        "source_account",
        "destination_account",
        "failure_code",
        "created_at",
        "updated_at",
    ]
    list_filter = ["status", "currency", "hold_status", "failure_code"]
    search_fields = ["id", "source_account", "destination_account", "ledger_transaction", "request_id"]
    show_full_result_count = False
    date_hierarchy = "created_at"
    fields = [
        "id",
        "status",
        "amount",
        "currency",
        "source_account",
        "destination_account",
        "description",
        "metadata_json",
        "ledger_transaction",
        "hold_status",
        "failure_code",
        "failure_message",
        "history",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "lease_owner",
        "client_id",
        "request_id",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    actions = ["cancel_selected"]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not request.user.has_perm("payments.change_payment"):
            actions.pop("cancel_selected", None)
        return actions

    @admin.display(description="metadata")
    def metadata_json(self, obj: Payment) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.metadata, indent=2, sort_keys=True, ensure_ascii=False))

    @admin.display(description="status history")
    def history(self, obj: Payment) -> str:
        return format_html("<pre>{}</pre>", "\n".join(f"{h['at']}  {h['status']}" for h in obj.status_history))

    @admin.action(description="Cancel selected payments (created or screening only)")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        canceled, refused = 0, []
        for payment_id in queryset.values_list("id", flat=True)[:500]:
            try:
                services.payment_cancel(payment_id=payment_id)
                canceled += 1
            except DomainError as exc:
                refused.append(f"{payment_id}: {exc.code}")
        if canceled:
            self.message_user(request, f"Canceled {canceled} payment(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not canceled: " + "; ".join(refused[:20]), messages.WARNING)


class ScreeningRuleForm(forms.ModelForm):
    """A rule's currency is one payments accept (PAYMENTS_CURRENCIES, a subset of the kit's ISO 4217 list):
    a rule for another code could never apply, and a typo (``eur``) would pass silently."""

    def clean_currency(self) -> str:
        currency = self.cleaned_data.get("currency") or ""
        if currency and currency not in settings.PAYMENTS_CURRENCIES:
            accepted = ", ".join(settings.PAYMENTS_CURRENCIES)
            raise forms.ValidationError(f"{currency!r} is not a currency payments accept ({accepted}).")
        return currency


@admin.register(CurrencyLimit)
class CurrencyLimitAdmin(SelectorAdmin):
    selector = selectors.currency_limit_list
    form = ScreeningRuleForm
    list_display = ["currency", "max_amount", "enabled", "updated_at"]
    list_filter = ["enabled"]
    list_editable = ["max_amount", "enabled"]


@admin.register(VelocityLimit)
class VelocityLimitAdmin(SelectorAdmin):
    selector = selectors.velocity_limit_list
    form = ScreeningRuleForm
    list_display = ["name", "currency", "window_hours", "max_count", "max_amount", "enabled", "updated_at"]
    list_filter = ["enabled", "currency"]


@admin.register(BlockedAccount)
class BlockedAccountAdmin(SelectorAdmin):
    selector = selectors.blocked_account_list
    list_display = ["account", "reason", "created_at"]
    search_fields = ["account", "reason"]


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    selector = selectors.idempotency_key_list
    list_display = ["key", "client_id", "state", "response_status", "payment", "created_at", "expires_at"]
    list_filter = ["state"]
    search_fields = ["key", "client_id", "payment__id"]
    show_full_result_count = False
