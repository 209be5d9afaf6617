"""Admin pages with a live region: what the catalog's and the job dashboard's pages share.

A page is an admin view (login, staff, the admin's header and breadcrumbs) that needs one permission. Its live
region is kept up to date without a reload by ``static/catalog/live.js``, which fetches the same URL with
``?fragment=1`` every few seconds (``?refresh=N`` for another period, ``?refresh=0`` to stop) and swaps the
region's HTML; the region is rendered by the same template include as the full page, and answered with
:data:`FRAGMENT_HEADER` so the script never swaps in anything else (an expired session's login page).
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

FRAGMENT_HEADER = "X-Catalog-Fragment"
MAX_REFRESH_SECONDS = 300

View = Callable[..., HttpResponse]


def refresh_seconds(request: HttpRequest) -> int:
    """The live region's refresh period: ``?refresh=N`` (0 to 300; 0 stops it), else
    ``CATALOG_PAGE_REFRESH_SECONDS`` (5)."""
    default = int(getattr(settings, "CATALOG_PAGE_REFRESH_SECONDS", 5))
    value = request.GET.get("refresh", "")
    return min(int(value), MAX_REFRESH_SECONDS) if value.isdigit() else default


def admin_page(permission: str) -> Callable[[View], View]:
    """Make ``view`` an admin view (login and staff, or the login page) that needs ``permission`` (or 403)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(permission):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return admin.site.admin_view(checked)

    return decorate


def render_live(
    request: HttpRequest,
    *,
    templates: str,
    page: str,
    title: str,
    context: dict[str, Any],
    crumbs: list[tuple[str, str]],
    nav: list[tuple[str, str, str]],
    live: bool = True,
    template: str = "",
    page_context: dict[str, Any] | None = None,
) -> HttpResponse:
    """The full page ``{templates}/{page}.html`` (or ``template``), or with ``?fragment=1`` only its live region
    ``{templates}/_{page}_region.html``. ``context`` goes to both; ``page_context`` to the full page only."""
    region = f"{templates}/_{page}_region.html"
    query = request.GET.copy()
    query.pop("refresh", None)
    query["fragment"] = "1"
    context = {
        **context,
        "page": page,
        "region_template": region,
        "live_url": f"{request.path}?{query.urlencode()}",
        "refresh_seconds": refresh_seconds(request) if live else 0,
    }
    if request.GET.get("fragment"):
        response = TemplateResponse(request, region, context)
        response[FRAGMENT_HEADER] = "1"
        return response
    return TemplateResponse(
        request,
        template or f"{templates}/{page}.html",
        {
            **admin.site.each_context(request),
            # the tables and charts need the width more than the admin's model list does
            "is_nav_sidebar_enabled": False,
            **context,
            **(page_context or {}),
            "title": title,
            "crumbs": crumbs,
            "nav": nav,
        },
    )
