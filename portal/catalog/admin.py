"""Catalog admin: operators edit services and teams; instances are what heartbeats say (read-only); health
checks are a status code and an error class."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from portal.catalog.errors import HealthURLRefused
from portal.catalog.models import Dependency, HealthCheck, Instance, Service, Team
from portal.catalog.services import health_url_check


class DependencyInline(admin.TabularInline):
    model = Dependency
    fk_name = "service"
    fields = ["target_slug", "resource", "target"]
    readonly_fields = ["target"]
    extra = 0


class InstanceInline(admin.TabularInline):
    model = Instance
    fields = ["instance", "host", "pid", "version", "status", "started_at", "last_heartbeat", "heartbeats"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ServiceForm(forms.ModelForm):
    """The admin's service form refuses the health URLs registration refuses (``health_url_check``); the
    admin gives it its model and fields."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not cleaned.get("part_of") and cleaned.get("slug"):  # blank: a service of its own
            cleaned["part_of"] = cleaned["slug"]
        if "health_url" in cleaned and "base_url" in cleaned:
            try:
                health_url_check(health_url=cleaned["health_url"], base_url=cleaned["base_url"])
            except HealthURLRefused as refused:
                self.add_error("health_url", forms.ValidationError(refused.detail, code=refused.code))
        return cleaned


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    form = ServiceForm
    # A URL typed without a scheme is read as https (Django 6's default, chosen now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = [
        "slug",
        "display_name",
        "part_of",
        "role",
        "owner",
        "tier",
        "lifecycle",
        "version",
        "health_status",
        "last_checked_at",
        "registered_by",
    ]
    list_filter = ["part_of", "role", "lifecycle", "tier", "owner", "health_status"]
    search_fields = ["slug", "display_name", "description", "tags"]
    readonly_fields = ["health_status", "last_checked_at", "created_at", "updated_at"]
    inlines = [DependencyInline, InstanceInline]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "contact", "on_call"]
    search_fields = ["slug", "name"]


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ["service", "instance", "host", "pid", "version", "status", "last_heartbeat", "heartbeats"]
    list_filter = ["status", "service"]
    search_fields = ["instance", "host", "service__slug"]
    readonly_fields = [f.name for f in Instance._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(HealthCheck)
class HealthCheckAdmin(admin.ModelAdmin):
    list_display = ["service", "status", "http_status", "latency_ms", "error", "checked_at"]
    list_filter = ["status", "error", "service"]
    date_hierarchy = "checked_at"
    readonly_fields = [f.name for f in HealthCheck._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
