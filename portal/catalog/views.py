"""The catalog pages in the admin: overview, a service, the dependency graph, teams.

Each page is an admin view (login, staff, the admin's header and breadcrumbs) that needs
``catalog.view_service``; what it shows is built in :mod:`portal.catalog.pages`. Each page keeps one region
up to date without a reload (:mod:`portal.ui.live`).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse

from portal.catalog.errors import ServiceNotFound
from portal.catalog.pages.graph import graph_page
from portal.catalog.pages.overview import overview_page
from portal.catalog.pages.service import service_page
from portal.catalog.pages.teams import teams_page
from portal.ui.live import admin_page, render_live

VIEW_PERMISSION = "catalog.view_service"
EDIT_PERMISSION = "catalog.change_service"

catalog_view = admin_page(VIEW_PERMISSION)


def _render(
    request: HttpRequest, *, page: str, title: str, context: dict[str, Any], crumbs: list[tuple[str, str]]
) -> HttpResponse:
    """The full page, or with ``?fragment=1`` only its live region (the same include)."""
    return render_live(
        request,
        templates="admin/catalog",
        page=page,
        title=title,
        context=context,
        crumbs=crumbs,
        nav=[
            ("overview", "Overview", reverse("catalog_pages:overview")),
            ("graph", "Dependency graph", reverse("catalog_pages:graph")),
            ("teams", "Teams", reverse("catalog_pages:teams")),
        ],
        page_context={"app_url": reverse("admin:app_list", kwargs={"app_label": "catalog"})},
    )


@catalog_view
def overview(request: HttpRequest) -> HttpResponse:
    found = overview_page(params=request.GET.dict())
    return _render(request, page="overview", title="Service catalog", context={"overview": found}, crumbs=[])


@catalog_view
def service(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        found = service_page(slug=slug, window=request.GET.get("range", "24h"))
    except ServiceNotFound as exc:
        raise Http404(exc.detail) from exc
    # the portal's own tools (job dashboard, audit trail) only for those who may open them
    found.group.tools = [t for t in found.group.tools if not t.permission or request.user.has_perm(t.permission)]
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
        context={"graph_page": graph_page(resources=request.GET.get("resources") in ("1", "true"))},
        crumbs=[("Overview", reverse("catalog_pages:overview"))],
    )


@catalog_view
def teams(request: HttpRequest) -> HttpResponse:
    return _render(
        request,
        page="teams",
        title="Teams",
        context={"teams": teams_page()},
        crumbs=[("Overview", reverse("catalog_pages:overview"))],
    )
