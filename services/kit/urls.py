"""URL patterns every Atrium process exposes: health, metrics, OpenAPI schema and docs."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, include, path, re_path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from services.kit import health
from services.kit.canonical_urls import NOT_FOUND_NAME
from services.kit.errors import handler404
from services.kit.favicon import favicon_view
from services.kit.ids import PrefixedIdConverter
from services.kit.metrics import metrics_view

register_converter(PrefixedIdConverter, "pid")


def kit_urlpatterns() -> list[URLPattern]:
    """Health, metrics, ``/api/schema`` and ``/api/docs``, ``/favicon.ico``, and a problem-details 404 for the rest.

    Include them last: the final pattern answers every unknown path (even with
    DEBUG on) so API clients never get an HTML error page. The URL rule (no
    trailing slash; the slashed spelling answers 308) is in services/kit/canonical_urls.py.
    """
    return [
        path("health/live", health.live, name="health-live"),
        path("health/ready", health.ready, name="health-ready"),
        path("metrics", health.require_get(metrics_view), name="metrics"),
        path("api/schema", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
        path(
            "api/docs",
            SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
            name="api-docs",
        ),
        path("favicon.ico", favicon_view, name="favicon"),
        re_path(r"^.*$", _not_found, name=NOT_FOUND_NAME),
    ]


def _not_found(request: HttpRequest) -> HttpResponse:
    return handler404(request)


def service_urlpatterns(*, api: str) -> list[URLPattern | URLResolver]:
    """A service's whole URLconf: its admin, its ``/api/v1/`` module, then the kit's patterns."""
    return [
        path("admin/", admin.site.urls),
        path("api/v1/", include(api)),
        *kit_urlpatterns(),
    ]
