"""OpenAPI descriptions of the kit's authentication (drf-spectacular extensions)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class JWTAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "services.kit.auth.JWTAuthentication"
    match_subclasses = True  # a service's own refinement (the portal's checks its clients on writes) is the same scheme
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A portal-issued token for this service's audience (POST /api/v1/auth/token on the portal).",
        }
