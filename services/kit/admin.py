"""Every service's admin: the failed-login records behind lockouts (django-axes), and the operator unlock.

*Access attempts* lists each username/address pair's recent failures and whether the username or the address is
locked out. Unlocking needs ``axes.delete_accessattempt`` (in the portal: the admin and operator roles; in the
services: superusers), from the *Unlock* page (type a username or an address) or the list's actions; each unlock is
audited (``auth.login.unlocked``, services/kit/logins.py). Records are never edited or deleted by hand here.
"""

from __future__ import annotations

from typing import Any

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import IntegerField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from services.kit.logins import login_unlock

UNLOCK_PERMISSION = "axes.delete_accessattempt"


class OfferedActionsOnly(admin.ModelAdmin):
    """A list whose actions depend on who is looking (``get_actions``): an action posted by someone it is not
    offered to is refused (403), where Django would just ignore it. Put it first among an admin's bases."""

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if (
            request.method == "POST"
            and request.POST.get("action")
            and request.POST["action"] not in self.get_actions(request)
        ):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)


class UnlockForm(forms.Form):
    username = forms.CharField(required=False, max_length=255, strip=True)
    ip_address = forms.GenericIPAddressField(required=False, label="Address", unpack_ipv4=True)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if bool(data.get("username")) == bool(data.get("ip_address")):
            raise forms.ValidationError("Give a username or an address (one of them).", code="one_of")
        return data


def _failures(recent: QuerySet[AccessAttempt], field: str) -> Coalesce:
    """The failures of the row's username (or address) across every row within the cool-off."""
    total = (
        recent.filter(**{field: OuterRef(field)})
        .order_by()
        .values(field)
        .annotate(total=Sum("failures_since_start"))
        .values("total")[:1]
    )
    return Coalesce(Subquery(total, output_field=IntegerField()), Value(0))


@admin.register(AccessAttempt)
class AccessAttemptAdmin(admin.ModelAdmin):
    list_display = ["username", "ip_address", "failures_since_start", "locked_out", "attempt_time", "user_agent"]
    search_fields = ["username", "ip_address"]
    date_hierarchy = "attempt_time"
    # The form data axes keeps (masked passwords, CSRF tokens) is of no use to an operator: not shown.
    fields = ["username", "ip_address", "user_agent", "path_info", "failures_since_start", "attempt_time"]
    readonly_fields = fields
    actions = ["unlock_usernames", "unlock_addresses"]
    change_list_template = "kit/accessattempt_change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccessAttempt]:
        recent = AccessAttempt.objects.all()
        cool_off = get_cool_off(request)
        if cool_off:
            recent = recent.filter(attempt_time__gte=timezone.now() - cool_off)
        return (
            super()
            .get_queryset(request)
            .annotate(username_failures=_failures(recent, "username"), address_failures=_failures(recent, "ip_address"))
        )

    @admin.display(description="locked out")
    def locked_out(self, obj: AccessAttempt) -> str:
        limit = settings.AXES_FAILURE_LIMIT
        parameters = settings.AXES_LOCKOUT_PARAMETERS
        locked = [
            label
            for parameter, label, failures in (
                ("username", "username", obj.username_failures),  # type: ignore[attr-defined]
                ("ip_address", "address", obj.address_failures),  # type: ignore[attr-defined]
            )
            if parameter in parameters and failures >= limit
        ]
        return ", ".join(locked) or "no"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AccessAttempt | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AccessAttempt | None = None) -> bool:
        return False  # unlock instead: it is audited as what it is

    def has_unlock_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(UNLOCK_PERMISSION)

    def get_urls(self) -> list[URLPattern]:
        unlock = path("unlock/", self.admin_site.admin_view(self.unlock_view), name="axes_accessattempt_unlock")
        return [unlock, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_unlock": self.has_unlock_permission(request)}
        return super().changelist_view(request, extra_context)

    def unlock_view(self, request: HttpRequest) -> HttpResponse:
        """Unlock one username or one address, typed in (it need not be in the list)."""
        if not self.has_unlock_permission(request):
            raise PermissionDenied
        form = UnlockForm(request.POST if request.method == "POST" else None, initial=request.GET.dict())
        if request.method == "POST" and form.is_valid():
            username, address = form.cleaned_data["username"], form.cleaned_data["ip_address"]
            cleared = login_unlock(username=username, ip_address=address)
            what = f"username {username}" if username else f"address {address}"
            self.message_user(request, f"Unlocked {what} ({cleared} failure record(s) cleared).", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:axes_accessattempt_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Unlock a username or an address",
            "form": form,
        }
        return TemplateResponse(request, "kit/login_unlock.html", context)

    @admin.action(description="Unlock the usernames of the selected attempts", permissions=["unlock"])
    def unlock_usernames(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        names = sorted(set(queryset.exclude(username=None).exclude(username="").values_list("username", flat=True)))
        for name in names:
            login_unlock(username=name)
        self.message_user(request, f"Unlocked {len(names)} username(s): {', '.join(names)}.", messages.SUCCESS)

    @admin.action(description="Unlock the addresses of the selected attempts", permissions=["unlock"])
    def unlock_addresses(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        addresses = sorted(set(queryset.exclude(ip_address=None).values_list("ip_address", flat=True)))
        for address in addresses:
            login_unlock(ip_address=address)
        self.message_user(request, f"Unlocked {len(addresses)} address(es): {', '.join(addresses)}.", messages.SUCCESS)
