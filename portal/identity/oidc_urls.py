"""django-oauth-toolkit's OpenID Connect routes, spelled by the URL rule (no trailing slash; the slashed spelling
answers 308): ``/o/authorize``, ``/o/token``, ``/o/userinfo``, ``/o/jwks``, ``/o/revoke``, ``/o/logout``, and the
discovery document at the issuer's root, ``/.well-known/openid-configuration``. Only what people's sign-in needs
is routed: no application management pages, no dynamic registration, no device flow. Included at the root."""

from django.urls import path
from oauth2_provider import views

app_name = "oauth2_provider"  # the library reverses its own names in this namespace (discovery, redirects)

urlpatterns = [
    path(
        ".well-known/openid-configuration",
        views.ConnectDiscoveryInfoView.as_view(),
        name="oidc-connect-discovery-info",
    ),
    path("o/authorize", views.AuthorizationView.as_view(), name="authorize"),
    path("o/token", views.TokenView.as_view(), name="token"),
    path("o/revoke", views.RevokeTokenView.as_view(), name="revoke-token"),
    path("o/userinfo", views.UserInfoView.as_view(), name="user-info"),
    path("o/jwks", views.JwksInfoView.as_view(), name="jwks-info"),
    path("o/logout", views.RPInitiatedLogoutView.as_view(), name="rp-initiated-logout"),
]
