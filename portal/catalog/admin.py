"""Catalog admin: operators edit services and teams; instances are what heartbeats say (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from portal.catalog.models import Dependency, HealthCheck, Instance, Service, Team


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


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    # A URL typed without a scheme is read as https (Django 6's default, chosen now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = [
        "slug",
        "display_name",
        "owner",
        "tier",
        "lifecycle",
        "version",
        "health_status",
        "last_checked_at",
        "registered_by",
    ]
    list_filter = ["lifecycle", "tier", "owner", "health_status"]
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
    list_display = ["service", "status", "http_status", "latency_ms", "detail", "checked_at"]
    list_filter = ["status", "service"]
    date_hierarchy = "checked_at"
    readonly_fields = [f.name for f in HealthCheck._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
