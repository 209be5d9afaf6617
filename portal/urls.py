"""Portal URLs: admin, identity (token endpoint, JWKS, OpenID Connect provider), portal API, health, metrics, docs."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from rest_framework.routers import SimpleRouter

from portal.diagnostics import PingView
from portal.identity.api.views import MachineClientViewSet, MeView, TokenView, jwks_view, revocations_view
from services.kit.urls import kit_urlpatterns

# No trailing slash, like every API route; the slashed spelling answers 308 (services/kit/canonical_urls.py).
router = SimpleRouter(trailing_slash=False)
router.register("identity/clients", MachineClientViewSet, basename="machine-client")

api_v1 = [
    path("auth/token", TokenView.as_view(), name="auth-token"),
    path("me", MeView.as_view(), name="me"),
    path("diagnostics/ping", PingView.as_view(), name="diagnostics-ping"),
    path("audit/", include("portal.audit.api.urls")),
    path("catalog/", include("portal.catalog.api.urls")),
    path("jobs/", include("portal.jobs.api.urls")),
    path("trace/", include("portal.trace.api.urls")),
    *router.urls,
]

# Version 2 of what changed shape: the catalog's services are groups of processes (docs/catalog.md).
api_v2 = [
    path("catalog/", include("portal.catalog.api.urls_v2")),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/catalog/", include("portal.catalog.urls")),  # the catalog pages, before the admin's own
    path("admin/jobs/", include("portal.jobs.urls")),
    path("admin/trace/", include("portal.trace.urls")),
    path("admin/", include("portal.home.urls")),  # the home replaces the admin's index (its model list below)
    path("admin/", admin.site.urls),
    path(".well-known/jwks.json", jwks_view, name="jwks"),
    # People's sign-in (OpenID Connect provider, docs/sso.md): /.well-known/openid-configuration and /o/...
    path("", include("portal.identity.oidc_urls")),
    path(".well-known/atrium-revocations.json", revocations_view, name="revocations"),
    path("api/v1/", include(api_v1)),
    path("api/v2/", include(api_v2)),
    *kit_urlpatterns(),
]

admin.site.site_header = "Atrium portal"
admin.site.site_title = "Atrium portal"  # every page's <title> ends with it: "Service catalog | Atrium portal"
admin.site.index_title = "Home"

# Django's error views (paths outside DRF): the kit's problem+json ones, the same in every root URLconf.
from services.kit.errors import handler400, handler403, handler404, handler500  # noqa: E402, F401
