"""Admin for machine clients: the secret is shown once, on the page that created or rotated it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from portal.identity import services, throttle
from portal.identity.errors import InvalidClientConfiguration, LockoutsUnavailable
from portal.identity.models import MachineClient
from services.kit.audit import audit_record


def _audience_choices() -> list[tuple[str, str]]:
    return [(a, a) for a in settings.ATRIUM_AUDIENCE_SCOPES]


def _scope_choices() -> list[tuple[str, str]]:
    return [(s, s) for scopes in settings.ATRIUM_AUDIENCE_SCOPES.values() for s in scopes]


class MachineClientForm(forms.ModelForm):
    allowed_audiences = forms.MultipleChoiceField(choices=_audience_choices, widget=forms.CheckboxSelectMultiple)
    allowed_scopes = forms.MultipleChoiceField(
        choices=_scope_choices, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = MachineClient
        fields = ["name", "description", "allowed_audiences", "allowed_scopes", "token_ttl_seconds"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            services.client_validate_grants(
                audiences=data.get("allowed_audiences") or [], scopes=data.get("allowed_scopes") or []
            )
        except InvalidClientConfiguration as exc:
            raise ValidationError(exc.detail) from exc
        return data


@admin.register(MachineClient)
class MachineClientAdmin(admin.ModelAdmin):
    form = MachineClientForm
    list_display = ["name", "id", "audiences", "is_active", "secret_last4", "last_used_at", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "id", "description"]
    readonly_fields = [
        "id",
        "secret_last4",
        "is_active",
        "created_by",
        "created_at",
        "updated_at",
        "secret_rotated_at",
        "revoked_at",
        "last_used_at",
        "token_lockout",
    ]
    actions = ["rotate_secret", "revoke", "unlock_token_endpoint"]

    @admin.display(description="token endpoint lockout")
    def token_lockout(self, obj: MachineClient) -> str:
        if obj.pk is None:
            return "-"
        remaining = throttle.token_lockout_remaining(obj.pk)
        return f"locked out for {remaining} more second(s) after repeated failed secrets" if remaining else "none"

    @admin.display(description="audiences")
    def audiences(self, obj: MachineClient) -> str:
        return ", ".join(obj.allowed_audiences)

    def has_delete_permission(self, request: HttpRequest, obj: MachineClient | None = None) -> bool:
        # Revoke instead: a deleted client would orphan the audit trail and observed calls.
        return False

    def save_model(self, request: HttpRequest, obj: MachineClient, form: forms.ModelForm, change: bool) -> None:
        if change:
            # What the client may do, before and after (the admin's own event only names the fields).
            changes = {f: [form.initial.get(f), form.cleaned_data.get(f)] for f in form.changed_data}
            super().save_model(request, obj, form, change)
            if changes:
                audit_record("portal.client.changed", object_type="machine_client", object_id=obj.pk, changes=changes)
            return
        client, secret = services.client_create(
            name=form.cleaned_data["name"],
            description=form.cleaned_data.get("description", ""),
            audiences=form.cleaned_data["allowed_audiences"],
            scopes=form.cleaned_data.get("allowed_scopes") or [],
            token_ttl_seconds=form.cleaned_data["token_ttl_seconds"],
            created_by=request.user,
        )
        form.instance = client
        obj.pk = client.pk
        request._atrium_new_secret = (client, secret)  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: MachineClient, post_url_continue: str | None = None
    ) -> HttpResponse:
        created = getattr(request, "_atrium_new_secret", None)
        if created is None:
            return super().response_add(request, obj, post_url_continue)
        return self._secret_page(request, *created, heading="Machine client created")

    def _secret_page(self, request: HttpRequest, client: MachineClient, secret: str, *, heading: str) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": heading,
            "client": client,
            "client_secret": secret,
        }
        response = TemplateResponse(request, "identity/machineclient_secret.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Rotate secret of the selected client", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[MachineClient]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Rotate one client at a time: its new secret is shown once.", messages.ERROR)
            return None
        client = queryset.get()
        secret = services.client_rotate_secret(client=client)
        return self._secret_page(request, client, secret, heading="Secret rotated")

    @admin.action(description="Unlock the token endpoint for the selected clients", permissions=["change"])
    def unlock_token_endpoint(self, request: HttpRequest, queryset: QuerySet[MachineClient]) -> None:
        unlocked = 0
        try:
            for client_id in queryset.values_list("pk", flat=True):
                unlocked += throttle.token_lockout_clear(client_id=client_id)  # audited, locked out or not
        except LockoutsUnavailable as exc:
            self.message_user(request, str(exc.detail), messages.ERROR)
            return
        self.message_user(request, f"Unlocked {unlocked} client(s) locked out of the token endpoint.", messages.SUCCESS)

    @admin.action(description="Revoke the selected clients", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[MachineClient]) -> None:
        count = 0
        for client in queryset.filter(is_active=True):
            services.client_revoke(client=client)
            count += 1
        self.message_user(request, f"Revoked {count} client(s).", messages.SUCCESS)
