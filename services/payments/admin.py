"""Payments admin: screening rules are edited here (every change audited); payments and idempotency keys
are read-only, since they change only through the API and the workers' state machine — and the operators' own
decisions: canceling, and approving or rejecting a payment in review (list actions, and the payment's page), each
through the same service function as the API (audited with the person as the actor)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from services.kit.admin import OfferedActionsOnly
from services.kit.errors import DomainError
from services.payments import selectors, services
from services.payments.models import (
    BlockedAccount,
    CurrencyLimit,
    IdempotencyKey,
    Payment,
    VelocityLimit,
)

REVIEW_PERMISSION = "payments.change_payment"  # as for cancel: the operator role (services/payments/roles.py)
_REVIEW_ACTIONS = ("cancel_selected", "approve_selected", "reject_selected")


class ReviewForm(forms.Form):
    reason = forms.CharField(
        max_length=services.REVIEW_REASON_MAX,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why (optional): kept in the audit trail; a rejection's failure message.",
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
class PaymentAdmin(OfferedActionsOnly, ReadOnlyAdmin):
    selector = selectors.payment_list
    list_display = [
        "id",
        "status",
        "amount",
        "currency",
        "source_account",
        "destination_account",
        "failure_code",
        "risk_decision",
        "risk_score",
        "created_at",
        "updated_at",
    ]
    list_filter = ["status", "risk_decision", "currency", "hold_status", "failure_code"]
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
        "risk_decision",
        "risk_score",
        "risk_assessment_id",
        "risk_reasons",
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
    actions = list(_REVIEW_ACTIONS)
    change_form_template = "admin/payments/payment/change_form.html"

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not request.user.has_perm(REVIEW_PERMISSION):
            for name in _REVIEW_ACTIONS:
                actions.pop(name, None)
        return actions

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {"can_review": request.user.has_perm(REVIEW_PERMISSION)}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<path:object_id>/review/<str:decision>/",
                self.admin_site.admin_view(self.review_view),
                name="payments_review",
            )
        ]
        return own + super().get_urls()

    def review_view(self, request: HttpRequest, object_id: str, decision: str) -> HttpResponse:
        """Approve or reject one payment in review: a form (an optional reason), POSTed."""
        if not request.user.has_perm(REVIEW_PERMISSION):
            raise PermissionDenied
        if decision not in services.REVIEW_DECISIONS:
            raise PermissionDenied
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        payment = get_object_or_404(Payment, pk=unquote(object_id))
        back = reverse("admin:payments_payment_change", args=[payment.pk])
        form = ReviewForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                services.payment_review_decide(
                    payment_id=payment.pk, decision=decision, reason=form.cleaned_data["reason"]
                )
            except DomainError as exc:
                self.message_user(request, f"{exc.title}: {exc.detail or exc.code} ({exc.code})", messages.ERROR)
            else:
                done = "Approved: it goes on to the ledger." if decision == "approve" else "Rejected."
                self.message_user(request, f"{payment.pk}: {done}", messages.SUCCESS)
            return HttpResponseRedirect(back)
        action = "Approve" if decision == "approve" else "Reject"
        note = (
            "Approving lets the payment go on: held and settled in the ledger."
            if decision == "approve"
            else "Rejecting ends the payment: rejected, risk_review_rejected."
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": payment,
            "title": f"{action} payment {payment.pk}",
            "form": form,
            "action": action,
            "note": note,
            "back": back,
        }
        return TemplateResponse(request, "admin/payments/payment/review.html", context)

    @admin.display(description="metadata")
    def metadata_json(self, obj: Payment) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.metadata, indent=2, sort_keys=True, ensure_ascii=False))

    @admin.display(description="status history")
    def history(self, obj: Payment) -> str:
        return format_html("<pre>{}</pre>", "\n".join(f"{h['at']}  {h['status']}" for h in obj.status_history))

    @admin.action(description="Approve selected payments in review (they go on to the ledger)")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        self._decide_selected(request, queryset, "approve")

    @admin.action(description="Reject selected payments in review")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        self._decide_selected(request, queryset, "reject")

    def _decide_selected(self, request: HttpRequest, queryset: QuerySet[Payment], decision: str) -> None:
        done, refused = 0, []
        for payment_id in queryset.values_list("id", flat=True)[:500]:
            try:
                services.payment_review_decide(payment_id=payment_id, decision=decision)
                done += 1
            except DomainError as exc:
                refused.append(f"{payment_id}: {exc.code}")
        verb = "Approved" if decision == "approve" else "Rejected"
        if done:
            self.message_user(request, f"{verb} {done} payment(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, f"Not {verb.lower()}: " + "; ".join(refused[:20]), messages.WARNING)

    @admin.action(description="Cancel selected payments (created, screening or review only)")
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
