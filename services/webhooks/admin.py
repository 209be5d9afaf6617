"""The webhooks admin ("Atrium webhooks admin"): endpoints with their success rate and last error, messages with
their deliveries, the attempt log with each answer's body, recoveries, the event-type catalog.

Everything here is read through selectors and read-only as a form: endpoints, messages and recoveries change only
through the write services, which check, audit and notify the dispatcher. Operators act from an endpoint's page
(disable with a reason, enable, recover since a time) and a message's page (resend to an endpoint); each action is a
POST to its own admin view, needs its permission (``services/webhooks/roles.py``), calls the service (which writes
its ``webhooks.*`` audit event) and is logged as an admin change (``webhooks.admin.change``, services/kit/
admin_audit.py). Viewers and auditors see no buttons, and a POST from them is 403.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from services.kit.admin import OfferedActionsOnly
from services.kit.errors import DomainError
from services.webhooks import selectors, services
from services.webhooks.models import Attempt, Delivery, Endpoint, EventType, Message, Recovery

RESPONSE_EXCERPT = 48  # characters of an answer's body in the attempt list
# The lists are wide (ids, URLs, answers): this admin gives them the whole width (no app sidebar).
admin.site.enable_nav_sidebar = False


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


def _when(value: dt.datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _pre(text: str) -> str:
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def _json(value: Any) -> str:
    return _pre(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def _link(model: str, object_id: Any, text: str | None = None) -> str:
    if not object_id:
        return "—"
    return format_html(
        '<a href="{}">{}</a>', reverse(f"admin:webhooks_{model}_change", args=[quote(object_id)]), text or object_id
    )


def _id_link(model: str, object_id: str) -> str:
    """An id in a list: small type, the whole id (operators copy it)."""
    return format_html('<span style="font-size: 11px">{}</span>', _link(model, object_id))


def _changelist(model: str, **query: str) -> str:
    return f"{reverse(f'admin:webhooks_{model}_changelist')}?{urlencode(query)}"


def _refused(request: HttpRequest, exc: DomainError) -> None:
    messages.error(request, f"{exc.title}: {exc.detail or exc.code} ({exc.code})")


class ActionAdmin(ReadOnlyAdmin):
    """A read-only admin with operator actions: admin views under ``<id>/<action>/``, each with its permission."""

    def _require(self, request: HttpRequest, permission: str) -> None:
        if not request.user.has_perm(permission):
            raise PermissionDenied

    def _action_page(
        self, request: HttpRequest, obj: Any, *, title: str, form: forms.Form, action: str, note: str = ""
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": obj,
            "title": title,
            "form": form,
            "action": action,
            "note": note,
            "back": reverse(f"admin:webhooks_{self.model._meta.model_name}_change", args=[obj.pk]),
        }
        return TemplateResponse(request, "admin/webhooks/action.html", context)

    def _done(self, request: HttpRequest, obj: Any, message: str) -> HttpResponseRedirect:
        """Log the action as an admin change (audited as ``webhooks.admin.change``) and go back to the object."""
        self.log_change(request, obj, message)
        messages.success(request, message)
        return HttpResponseRedirect(reverse(f"admin:webhooks_{self.model._meta.model_name}_change", args=[obj.pk]))


# ------------------------------------------------------------------------------------------------------- endpoints


class DisableForm(forms.Form):
    reason = forms.CharField(
        max_length=200, help_text="Shown on the endpoint and in the audit trail, e.g. 'receiver being migrated'."
    )


class RecoverForm(forms.Form):
    since = forms.DateTimeField(
        help_text="Send again every message to this endpoint since then that did not succeed (UTC, "
        "YYYY-MM-DD HH:MM:SS)."
    )
    until = forms.DateTimeField(required=False, help_text="Up to (empty: now).")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and since > timezone.now():
            raise forms.ValidationError("'since' is in the future.")
        if since and until and until <= since:
            raise forms.ValidationError("'until' must be after 'since'.")
        return cleaned


@admin.register(Endpoint)
class EndpointAdmin(OfferedActionsOnly, ActionAdmin):
    selector = selectors.endpoint_admin_list
    change_form_template = "admin/webhooks/endpoint/change_form.html"
    # Narrow enough for 1280 px beside the filters: the id is on the endpoint's page, the URL links to it.
    list_display = ["url", "state", "success_rate", "last_error_shown", "last_success_shown", "event_types_shown"]
    list_display_links = ["url"]
    list_filter = ["enabled", "ordered"]
    search_fields = ["id", "url", "description", "disabled_reason", "last_error"]
    fields = [
        "id",
        "url",
        "description",
        "event_types",
        "channels",
        "state",
        "disabled_at",
        "rate_limit",
        "max_in_flight",
        "ordered",
        "v1a",
        "metadata_shown",
        "success_rate",
        "last_status",
        "last_error",
        "last_success_at",
        "first_failure_at",
        "created_at",
        "updated_at",
        "recent_deliveries",
        "recoveries_shown",
    ]
    readonly_fields = fields  # never the secrets: they are read through the API, audited
    actions = ["enable_selected"]

    @admin.display(description="state", ordering="enabled")
    def state(self, obj: Endpoint) -> str:
        if obj.enabled:
            return mark_safe('<span class="wh-enabled" style="color: #1a7f37">enabled</span>')
        return format_html(
            '<span class="wh-disabled" style="color: #b42318">disabled</span>: {}', obj.disabled_reason or "—"
        )

    @admin.display(description="success 24 h")
    def success_rate(self, obj: Endpoint) -> str:
        total = getattr(obj, "attempts_24h", None)
        if not total:
            return mark_safe('<span class="wh-rate" title="no attempts in the last 24 hours">—</span>')
        ok = obj.succeeded_24h  # type: ignore[attr-defined]
        rate = 100 * ok / total
        colour = "#1a7f37" if rate >= 99 else "#9a6700" if rate >= 90 else "#b42318"
        return format_html(
            '<span class="wh-rate" style="color: {}" title="{} of {} attempts">{}&nbsp;%</span> <small>({}/{})</small>',
            colour,
            ok,
            total,
            f"{rate:.1f}",
            ok,
            total,
        )

    @admin.display(description="last error")
    def last_error_shown(self, obj: Endpoint) -> str:
        if not obj.last_error:  # the last attempt succeeded (or there was none)
            return "—"
        status = f"HTTP {obj.last_status}" if obj.last_status is not None else ""
        return " · ".join(part for part in (obj.last_error, status) if part)

    @admin.display(description="last success", ordering="last_success_at")
    def last_success_shown(self, obj: Endpoint) -> str:
        return _when(obj.last_success_at)

    @admin.display(description="event types")
    def event_types_shown(self, obj: Endpoint) -> str:
        return ", ".join(obj.event_types)

    @admin.display(description="metadata")
    def metadata_shown(self, obj: Endpoint) -> str:
        return _json(obj.metadata)

    @admin.display(description="recent deliveries")
    def recent_deliveries(self, obj: Endpoint) -> str:
        deliveries = selectors.endpoint_deliveries(obj.pk, limit=20)
        if not deliveries:
            return "none yet"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    _link("message", d.message_id),
                    d.message.type,
                    d.message.object_id or "—",
                    d.state,
                    d.attempts,
                    " · ".join(str(p) for p in (d.last_error, d.last_status) if p not in ("", None)) or "—",
                    format_html(
                        '<a href="{}">attempts</a>',
                        _changelist("attempt", message_id=d.message_id, endpoint_id=obj.pk),
                    ),
                )
                for d in deliveries
            ),
        )
        return format_html(
            '<table class="wh-deliveries"><thead><tr><th>message</th><th>type</th><th>object</th><th>state</th>'
            "<th>attempts</th><th>last</th><th></th></tr></thead><tbody>{}</tbody></table>"
            '<p><a href="{}">every attempt to this endpoint</a></p>',
            rows,
            _changelist("attempt", endpoint_id=obj.pk),
        )

    @admin.display(description="recoveries")
    def recoveries_shown(self, obj: Endpoint) -> str:
        recoveries = selectors.endpoint_recoveries(obj.pk)
        if not recoveries:
            return "none"
        return format_html_join(
            "",
            "<div>{} since {} — {}, {} sent again</div>",
            ((_link("recovery", r.pk), _when(r.since), r.state, r.recovered) for r in recoveries),
        )

    # Operators' actions ------------------------------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        own = [
            path("<path:object_id>/disable/", self.admin_site.admin_view(self.disable_view), name="webhooks_disable"),
            path("<path:object_id>/enable/", self.admin_site.admin_view(self.enable_view), name="webhooks_enable"),
            path("<path:object_id>/recover/", self.admin_site.admin_view(self.recover_view), name="webhooks_recover"),
        ]
        return own + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {
            "can_toggle": request.user.has_perm("webhooks.change_endpoint"),
            "can_recover": request.user.has_perm("webhooks.add_recovery"),
        }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not request.user.has_perm("webhooks.change_endpoint"):
            actions.pop("enable_selected", None)
        return actions

    def disable_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "webhooks.change_endpoint")
        endpoint = get_object_or_404(Endpoint, pk=unquote(object_id))
        form = DisableForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            reason = form.cleaned_data["reason"]
            try:
                services.endpoint_disable(endpoint_id=endpoint.pk, reason=reason)
            except DomainError as exc:
                _refused(request, exc)
            else:
                return self._done(request, endpoint, f"Disabled: {reason}")
        return self._action_page(
            request,
            endpoint,
            title=f"Disable {endpoint.url}",
            form=form,
            action="Disable",
            note="Nothing is sent to a disabled endpoint; what arrives meanwhile is not queued for it (recover it "
            "after enabling it again).",
        )

    def enable_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "webhooks.change_endpoint")
        endpoint = get_object_or_404(Endpoint, pk=unquote(object_id))
        if request.method == "POST":
            try:
                services.endpoint_enable(endpoint_id=endpoint.pk)
            except DomainError as exc:
                _refused(request, exc)
            else:
                return self._done(request, endpoint, "Enabled")
        return self._action_page(
            request,
            endpoint,
            title=f"Enable {endpoint.url}",
            form=forms.Form(),
            action="Enable",
            note=f"Disabled: {endpoint.disabled_reason or '—'} (since {_when(endpoint.disabled_at)}). "
            "Deliveries start again with the next message; recover what it missed afterwards.",
        )

    def recover_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "webhooks.add_recovery")
        endpoint = get_object_or_404(Endpoint, pk=unquote(object_id))
        initial = {"since": (timezone.now() - dt.timedelta(hours=24)).replace(microsecond=0)}
        form = RecoverForm(request.POST if request.method == "POST" else None, initial=initial)
        if request.method == "POST" and form.is_valid():
            since, until = form.cleaned_data["since"], form.cleaned_data.get("until")
            try:
                recovery = services.recovery_request(endpoint_id=endpoint.pk, since=since, until=until)
            except DomainError as exc:
                _refused(request, exc)
            else:
                return self._done(request, endpoint, f"Recovery {recovery.pk} requested since {_when(since)}")
        return self._action_page(
            request,
            endpoint,
            title=f"Recover {endpoint.url}",
            form=form,
            action="Recover",
            note="A background job sends again, in creation order, every message to this endpoint in that window "
            "that did not succeed. The receiver sees their original webhook-ids.",
        )

    @admin.action(description="Enable selected endpoints")
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._require(request, "webhooks.change_endpoint")
        enabled, refused = 0, []
        for endpoint in list(queryset.filter(enabled=False)[:500]):
            try:
                services.endpoint_enable(endpoint_id=endpoint.pk)
            except DomainError as exc:
                refused.append(f"{endpoint.pk}: {exc.code}")
                continue
            self.log_change(request, endpoint, "Enabled")
            enabled += 1
        self.message_user(request, f"Enabled {enabled} endpoint(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not enabled: " + "; ".join(refused[:20]), messages.WARNING)


# -------------------------------------------------------------------------------------------------------- messages


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fk_name = "message"
    extra = 0
    can_delete = False
    show_change_link = False
    fields = ["endpoint_shown", "state", "attempts", "last", "next_attempt_at", "succeeded_at", "attempt_log"]
    readonly_fields = fields
    verbose_name_plural = "deliveries (one per endpoint)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return selectors.delivery_admin_list()

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="endpoint")
    def endpoint_shown(self, obj: Delivery) -> str:
        return format_html("{} <small>{}</small>", _link("endpoint", obj.endpoint_id), obj.endpoint.url)

    @admin.display(description="last answer")
    def last(self, obj: Delivery) -> str:
        return " · ".join(str(p) for p in (obj.last_error, obj.last_status) if p not in ("", None)) or "—"

    @admin.display(description="attempts")
    def attempt_log(self, obj: Delivery) -> str:
        return format_html(
            '<a href="{}">attempts and answers</a>',
            _changelist("attempt", message_id=obj.message_id, endpoint_id=obj.endpoint_id),
        )


class ResendForm(forms.Form):
    endpoint = forms.ChoiceField(help_text="Send this message to this endpoint again, now (same webhook-id).")

    def __init__(self, *args: Any, choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["endpoint"].choices = choices


@admin.register(Message)
class MessageAdmin(ActionAdmin):
    selector = selectors.message_admin_list
    change_form_template = "admin/webhooks/message/change_form.html"
    inlines = [DeliveryInline]
    list_display = ["id", "type", "object_id", "channels_shown", "source", "created_at"]
    list_filter = ["type", "source"]
    search_fields = ["=id", "=object_id", "=event_id", "=request_id"]
    show_full_result_count = False
    fields = [
        "id",
        "type",
        "object_id",
        "channels_shown",
        "occurred_at",
        "created_at",
        "source",
        "event_id",
        "request_id",
        "seq",
        "body_shown",
        "attempts_link",
    ]
    readonly_fields = fields

    @admin.display(description="channels")
    def channels_shown(self, obj: Message) -> str:
        return ", ".join(obj.channels) or "—"

    @admin.display(description="body (the exact bytes sent)")
    def body_shown(self, obj: Message) -> str:
        try:
            return _json(json.loads(obj.body))
        except ValueError:
            return _pre(obj.body)

    @admin.display(description="attempts")
    def attempts_link(self, obj: Message) -> str:
        return format_html('<a href="{}">every attempt of this message</a>', _changelist("attempt", message_id=obj.pk))

    def _choices(self, message: Message) -> list[tuple[str, str]]:
        delivered = [
            (d.endpoint_id, f"{d.endpoint_id}  {d.endpoint.url}") for d in selectors.message_deliveries(message.pk)
        ]
        return delivered or selectors.endpoint_choices()

    def get_urls(self) -> list[Any]:
        own = [path("<path:object_id>/resend/", self.admin_site.admin_view(self.resend_view), name="webhooks_resend")]
        return own + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {"can_resend": request.user.has_perm("webhooks.resend_message")}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def resend_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        self._require(request, "webhooks.resend_message")
        message = get_object_or_404(Message, pk=unquote(object_id))
        form = ResendForm(request.POST if request.method == "POST" else None, choices=self._choices(message))
        if request.method == "POST" and form.is_valid():
            endpoint_id = form.cleaned_data["endpoint"]
            try:
                services.message_resend(message_id=message.pk, endpoint_id=endpoint_id)
            except DomainError as exc:
                _refused(request, exc)
            else:
                return self._done(request, message, f"Resent to {endpoint_id}")
        return self._action_page(
            request,
            message,
            title=f"Resend {message.pk} ({message.type})",
            form=form,
            action="Resend",
            note="One more delivery of the same message (same webhook-id: receivers that already handled it "
            "acknowledge it as a duplicate).",
        )


# -------------------------------------------------------------------------------------------------------- attempts


class StatusClassFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("2", "2xx"), ("3", "3xx"), ("4", "4xx"), ("5", "5xx"), ("none", "no answer")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Attempt]) -> QuerySet[Attempt]:
        value = self.value()
        if value == "none":
            return queryset.filter(status_code__isnull=True)
        if value in ("2", "3", "4", "5"):
            low = int(value) * 100
            return queryset.filter(status_code__gte=low, status_code__lt=low + 100)
        return queryset


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    selector = selectors.attempt_admin_list
    list_display = [
        "at_shown",
        "endpoint_shown",
        "message_shown",
        "status_shown",
        "duration_shown",
        "error_shown",
        "trigger",
        "response_excerpt",
    ]
    list_filter = [StatusClassFilter, "error", "trigger"]
    list_per_page = 25
    search_fields = ["=message_id", "=endpoint_id", "=request_id"]
    show_full_result_count = False
    # Newest first by the primary key's index (the log has only a BRIN index on ``at``: ordering or a date
    # hierarchy by it would sort or scan the whole log).
    ordering = ["-id"]
    list_display_links = None
    fields = [
        "at",
        "endpoint_shown",
        "message_shown",
        "number",
        "trigger",
        "status_code",
        "duration_ms",
        "error_shown",
        "response_shown",
        "request_id",
    ]
    readonly_fields = fields

    @admin.display(description="at", ordering="id")
    def at_shown(self, obj: Attempt) -> str:
        url = reverse("admin:webhooks_attempt_change", args=[obj.pk])
        return format_html('<a href="{}" style="white-space: nowrap">{}</a>', url, _when(obj.at))

    @admin.display(description="status", ordering="status_code")
    def status_shown(self, obj: Attempt) -> str:
        return str(obj.status_code) if obj.status_code is not None else "—"

    @admin.display(description="ms", ordering="duration_ms")
    def duration_shown(self, obj: Attempt) -> int:
        return obj.duration_ms

    @admin.display(description="endpoint", ordering="endpoint_id")
    def endpoint_shown(self, obj: Attempt) -> str:
        # Its end only (the whole id in the tooltip and on the attempt's page): the answer needs the width.
        short = f"…{obj.endpoint_id[-6:]}" if len(obj.endpoint_id) > 8 else obj.endpoint_id
        url = reverse("admin:webhooks_endpoint_change", args=[quote(obj.endpoint_id)])
        return format_html('<a href="{}" title="{}" style="font-size: 11px">{}</a>', url, obj.endpoint_id, short)

    @admin.display(description="message", ordering="message_id")
    def message_shown(self, obj: Attempt) -> str:
        return _id_link("message", obj.message_id)

    @admin.display(description="error", ordering="error")
    def error_shown(self, obj: Attempt) -> str:
        return obj.error or "—"

    @admin.display(description="response")
    def response_excerpt(self, obj: Attempt) -> str:
        text = obj.response_body.replace("\n", " ")
        text = text if len(text) <= RESPONSE_EXCERPT else text[: RESPONSE_EXCERPT - 1] + "…"
        return format_html(
            '<span style="display: inline-block; min-width: 170px; font-size: 11px; word-break: break-all">{}</span>',
            text or "—",
        )

    @admin.display(description="response body (first 4 KiB)")
    def response_shown(self, obj: Attempt) -> str:
        return _pre(obj.response_body) if obj.response_body else "(empty)"


# ------------------------------------------------------------------------------------------ recoveries, event types


@admin.register(Recovery)
class RecoveryAdmin(ReadOnlyAdmin):
    selector = selectors.recovery_admin_list
    list_display = ["id", "endpoint_shown", "since", "until", "state", "recovered", "created_at", "finished_at"]
    list_filter = ["state"]
    search_fields = ["=id", "=endpoint__id"]
    fields = [
        "id",
        "endpoint_shown",
        "since",
        "until",
        "state",
        "cursor_seq",
        "recovered",
        "error",
        "requested_by_shown",
        "request_id",
        "created_at",
        "updated_at",
        "finished_at",
    ]
    readonly_fields = fields

    @admin.display(description="endpoint", ordering="endpoint_id")
    def endpoint_shown(self, obj: Recovery) -> str:
        return format_html("{} <small>{}</small>", _link("endpoint", obj.endpoint_id), obj.endpoint.url)

    @admin.display(description="requested by")
    def requested_by_shown(self, obj: Recovery) -> str:
        return str((obj.requested_by or {}).get("display") or "—")


@admin.register(EventType)
class EventTypeAdmin(ReadOnlyAdmin):
    selector = selectors.event_type_admin_list
    list_display = ["name", "description", "archived", "created_at"]
    list_filter = ["archived"]
    search_fields = ["name", "description"]
    fields = ["name", "description", "archived", "schema_shown", "example_shown", "created_at"]
    readonly_fields = fields

    @admin.display(description="JSON Schema")
    def schema_shown(self, obj: EventType) -> str:
        return _json(obj.schema)

    @admin.display(description="example")
    def example_shown(self, obj: EventType) -> str:
        return _json(obj.example)
