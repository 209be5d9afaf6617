"""The catalog pages in the admin: overview, a service, the dependency graph, teams.

Each page is an admin view (login, staff, the admin's header and breadcrumbs) that needs
``catalog.view_service``; what it shows is built in :mod:`portal.catalog.pages`. Each page keeps one region
up to date without a reload: ``static/catalog/live.js`` fetches the same URL with ``?fragment=1`` every few
seconds (``?refresh=N`` for another period, ``?refresh=0`` to stop) and swaps the region's HTML, which is
rendered by the same template include as the full page.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from portal.catalog import pages

VIEW_PERMISSION = "catalog.view_service"
EDIT_PERMISSION = "catalog.change_service"
FRAGMENT_HEADER = "X-Catalog-Fragment"
MAX_REFRESH_SECONDS = 300

View = Callable[..., HttpResponse]


def refresh_seconds(request: HttpRequest) -> int:
    """The live region's refresh period: ``?refresh=N`` (0 to 300; 0 stops it), else
    ``CATALOG_PAGE_REFRESH_SECONDS`` (5)."""
    default = int(getattr(settings, "CATALOG_PAGE_REFRESH_SECONDS", 5))
    value = request.GET.get("refresh", "")
    return min(int(value), MAX_REFRESH_SECONDS) if value.isdigit() else default


def catalog_view(view: View) -> View:
    """An admin view (login and staff, or the login page) that needs ``catalog.view_service`` (or 403)."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return admin.site.admin_view(checked)


def _render(
    request: HttpRequest, *, page: str, title: str, context: dict[str, Any], crumbs: list[tuple[str, str]]
) -> HttpResponse:
    """The full page, or with ``?fragment=1`` only its live region (the same include)."""
    region = f"admin/catalog/_{page}_region.html"
    refresh = refresh_seconds(request)
    query = request.GET.copy()
    query.pop("refresh", None)
    query["fragment"] = "1"
    context = {
        **context,
        "page": page,
        "region_template": region,
        "live_url": f"{request.path}?{query.urlencode()}",
        "refresh_seconds": refresh,
    }
    if request.GET.get("fragment"):
        response = TemplateResponse(request, region, context)
        response[FRAGMENT_HEADER] = "1"
        return response
    return TemplateResponse(
        request,
        f"admin/catalog/{page}.html",
        {
            **admin.site.each_context(request),
            # the tables and the graph need the width more than the admin's model list does
            "is_nav_sidebar_enabled": False,
            **context,
            "title": title,
            "crumbs": crumbs,
            "app_url": reverse("admin:app_list", kwargs={"app_label": "catalog"}),
            "nav": [
                ("overview", "Overview", reverse("catalog_pages:overview")),
                ("graph", "Dependency graph", reverse("catalog_pages:graph")),
                ("teams", "Teams", reverse("catalog_pages:teams")),
            ],
        },
    )


@catalog_view
def overview(request: HttpRequest) -> HttpResponse:
    found = pages.overview_page(params=request.GET.dict())
    return _render(request, page="overview", title="Service catalog", context={"overview": found}, crumbs=[])


@catalog_view
def service(request: HttpRequest, slug: str) -> HttpResponse:
    found = pages.service_page(slug=slug, window=request.GET.get("range", "24h"))
    context: dict[str, Any] = {"service_page": found, "service": found.row.service}
    if request.user.has_perm(EDIT_PERMISSION):
        context["edit_url"] = reverse("admin:catalog_service_change", args=[found.row.service.pk])
    return _render(
        request,
        page="service",
        title=found.row.service.display_name or slug,
        context=context,
        crumbs=[("Overview", reverse("catalog_pages:overview"))],
    )


@catalog_view
def dependency_graph(request: HttpRequest) -> HttpResponse:
    return _render(
        request,
        page="graph",
        title="Dependency graph",
        context={"graph_page": pages.graph_page()},
        crumbs=[("Overview", reverse("catalog_pages:overview"))],
    )


@catalog_view
def teams(request: HttpRequest) -> HttpResponse:
    return _render(
        request,
        page="teams",
        title="Teams",
        context={"teams": pages.teams_page()},
        crumbs=[("Overview", reverse("catalog_pages:overview"))],
    )
