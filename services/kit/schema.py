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


# Every Atrium error is a problem document; these are the statuses any API operation may answer besides its own
# (authentication, permissions, unknown ids, limits, the database away), and those only writes may answer.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document (application/problem+json), as every Atrium error is answered.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable and machine-readable, e.g. insufficient_funds."},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "validation_error: one per field.",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string", "nullable": True},
                    "pointer": {"type": "string"},
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                },
                "required": ["pointer", "code", "detail"],
            },
        },
    },
    "required": ["type", "title", "status", "detail", "code"],
}
_ANY_OPERATION = {
    "400": "Malformed request, or invalid parameters (`validation_error` with per-field `errors`)",
    "401": "No token, or an invalid or expired one",
    "403": "The token lacks the scope (or the user the role) this needs",
    "404": "No such resource",
    "405": "Method not allowed",
    "406": "Not acceptable",
    "429": "Too many requests",
    "503": "The database or an upstream service is unavailable; retry later",
}
_WRITES = {
    "409": "Conflicts with the resource's current state",
    "413": "Request body too large",
    "415": "Unsupported media type",
    "422": "Refused by a business rule (a stable `code` says which)",
}
_PROBLEM_TYPES = ("application/problem+json",)


def problem_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: every operation documents the problem responses the kit can give it
    (so clients and contract tests know them), and every error response is ``application/problem+json``."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Problem", PROBLEM_SCHEMA)
    reference = {"$ref": "#/components/schemas/Problem"}
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            wanted = dict(_ANY_OPERATION)
            if method.lower() in ("post", "put", "patch", "delete"):
                wanted.update(_WRITES)
            for status, description in wanted.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if not str(status).startswith(("4", "5")) or not isinstance(response, dict):
                    continue
                content = response.get("content") or {}
                schema = next((media.get("schema") for media in content.values() if media.get("schema")), reference)
                response["content"] = {media_type: {"schema": schema} for media_type in _PROBLEM_TYPES}
    return result
