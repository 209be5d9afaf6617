"""The API reference every service serves (``/api/schema``, ``/api/docs``): drf-spectacular, written for integrators.

- :func:`api_operation` documents one operation (summary, description, examples) and declares the domain errors
  it raises; the errors feed the schema (each as a problem response with its code) and the completeness test
  (``services/kit/raised_errors.py`` checks statically that a view declares every error its code can raise).
- :class:`AtriumAutoSchema` keeps developers' docstrings out of the schema: its text comes only from explicit
  ``api_operation`` / ``extend_schema`` / ``extend_schema_serializer`` words and fields' ``help_text``.
- :func:`problem_responses` (a postprocessing hook) lists on every operation the problems the kit may answer
  with, their codes and an example of each, and the headers that matter (``X-Request-ID`` both ways,
  ``Idempotent-Replayed`` where ``Idempotency-Key`` is taken).
- :class:`JWTAuthenticationScheme`: OAuth 2.0 client credentials at the portal's token URL (Swagger UI's
  "Authorize" gets a token from a client id and secret), or a pasted bearer token.
- :data:`AMOUNT_SCHEMA`, :data:`CURRENCY_SCHEMA`: money as integer minor units and an ISO 4217 code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_override
from drf_spectacular.utils import OpenApiExample, extend_schema

from services.kit.auth import required_scopes
from services.kit.currencies import CURRENCIES
from services.kit.errors import DomainError

MAX_AMOUNT = 2**63 - 1

AMOUNT_SCHEMA: dict[str, Any] = {
    "type": "integer",
    "format": "int64",
    "minimum": 1,
    "maximum": MAX_AMOUNT,
    "description": "An amount in the currency's minor units, as an integer: 1250 is EUR 12.50, 500 is JPY 500 "
    "(ISO 4217 gives each currency its minor units). Never a decimal or a string.",
    "example": 1250,
}
CURRENCY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": "^[A-Z]{3}$",
    "enum": sorted(CURRENCIES),
    "description": "An ISO 4217 alphabetic currency code, upper case (EUR, USD, JPY).",
    "example": "EUR",
}

_ERRORS_ATTRIBUTE = "_atrium_declared_errors"


def api_operation(
    *,
    summary: str,
    description: str,
    errors: Iterable[type[DomainError]] = (),
    examples: Sequence[OpenApiExample] = (),
    **extend: Any,
) -> Callable[[Any], Any]:
    """Document an operation for integrators and declare the domain errors its code raises (and only those: the
    kit's own problems, such as ``validation_error`` or ``insufficient_scope``, are listed on every operation).

    Use it on a view's method (or through ``extend_schema_view`` for inherited ones); ``extend`` is passed to
    ``extend_schema`` (request, responses, parameters...). An error class whose code depends on the case lists
    its codes in a ``codes`` attribute."""
    declared = tuple(errors)
    for error in declared:
        if not (isinstance(error, type) and issubclass(error, DomainError)):
            raise TypeError(f"{error!r} is not a DomainError class")

    def decorate(func: Any) -> Any:
        setattr(func, _ERRORS_ATTRIBUTE, declared)
        return extend_schema(summary=summary, description=description, examples=list(examples), **extend)(func)

    return decorate


def declared_errors(func: Any) -> tuple[type[DomainError], ...]:
    """The errors ``api_operation`` declared on ``func`` (a view's method), or ``()``."""
    return getattr(func, _ERRORS_ATTRIBUTE, ())


def view_method(view: Any, method: str) -> Any:
    """The function that answers ``method`` on ``view`` (a viewset's action or an APIView's handler)."""
    action = getattr(view, "action", None)
    return getattr(view, action or method.lower(), None)


def problem_example(error: type[DomainError] | None, *, status: int, code: str, title: str) -> dict[str, Any]:
    """What a problem document looks like for ``code`` (values as a real answer has them)."""
    if error is not None:
        status, code, title = error.status, error.code, error.title
    return {
        "type": f"urn:atrium:problem:{code}",
        "title": title,
        "status": status,
        "detail": title if title.endswith(".") else f"{title}.",
        "code": code,
        "instance": "/api/v1/…",
        "request_id": "req_01JD0Q4Z8K2B7W3XJ5N6M9P1RT",
    }


class AtriumAutoSchema(AutoSchema):
    """drf-spectacular's schema, without docstrings (they are for developers), with the declared errors."""

    def get_description(self) -> str:  # type: ignore[override]
        return ""  # only an explicit extend_schema(description=...) (api_operation) describes an operation

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        explicit = get_override(serializer, "description", None)
        schema.pop("description", None)
        if explicit:
            schema["description"] = explicit
        return schema

    def _map_response_type_hint(self, method: Any) -> dict[str, Any]:
        schema = super()._map_response_type_hint(method)
        schema.pop("description", None)  # a SerializerMethodField's docstring
        return schema

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        errors = declared_errors(view_method(self.view, self.method))
        if errors:
            # An error whose code varies by case names its codes in ``codes``.
            operation["x-atrium-errors"] = sorted(
                {(e.status, code, e.title) for e in errors for code in getattr(e, "codes", None) or (e.code,)}
            )
        return operation


class JWTAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "services.kit.auth.JWTAuthentication"
    match_subclasses = True  # a service's own refinement (the portal's checks its clients on writes) is the same scheme
    name = ["oauth2", "bearerAuth"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[str]]]:
        # Either scheme (OR): a token from the client-credentials flow, or one pasted.
        scopes = sorted(required_scopes(auto_schema.view, auto_schema.method))
        return [{"oauth2": scopes}, {"bearerAuth": []}]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {
                "type": "oauth2",
                "description": "OAuth 2.0 client credentials: the portal issues a token for this service's audience "
                "from a machine client's id and secret (sent as HTTP Basic credentials or in the form body). Send "
                "it as `Authorization: Bearer <token>`; it lasts the client's token lifetime (15 minutes by "
                "default).",
                "flows": {"clientCredentials": {"tokenUrl": token_url(), "scopes": {}}},
            },
            {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A portal-issued token for this service's audience, pasted "
                "(POST /api/v1/auth/token on the portal).",
            },
        ]


def token_url() -> str:
    """The portal's token endpoint (absolute, from settings), naming this service as the audience: Swagger UI's
    client-credentials request sends no audience of its own."""
    base = settings.ATRIUM_TOKEN_URL
    if not base:
        portal = getattr(settings, "ATRIUM_PORTAL_URL", "") or ""
        base = f"{portal.rstrip('/')}/api/v1/auth/token"
    return f"{base}?{urlencode({'audience': settings.JWT_AUDIENCE})}"


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document (application/problem+json), as every Atrium error is answered. "
    "Branch on `code`: it is stable, and the same code always means the same thing.",
    "properties": {
        "type": {"type": "string", "description": "`urn:atrium:problem:<code>`."},
        "title": {"type": "string", "description": "A short summary of the code, the same for every occurrence."},
        "status": {"type": "integer", "description": "The HTTP status."},
        "detail": {"type": "string", "description": "What went wrong with this request, for people."},
        "code": {"type": "string", "description": "Stable and machine-readable, e.g. insufficient_funds."},
        "instance": {"type": "string", "description": "The request's path."},
        "request_id": {"type": "string", "description": "The request id (`X-Request-ID`); quote it to support."},
        "errors": {
            "type": "array",
            "description": "validation_error: one per field.",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string", "nullable": True},
                    "pointer": {"type": "string", "description": "A JSON Pointer into the request body."},
                    "code": {"type": "string", "description": "required, invalid, unknown_field, …"},
                    "detail": {"type": "string"},
                },
                "required": ["pointer", "code", "detail"],
            },
        },
    },
    "required": ["type", "title", "status", "detail", "code"],
}

# The problems the kit may answer any operation with, and those only writes may answer: status → (what, codes).
_ANY_OPERATION: dict[str, tuple[str, tuple[str, ...]]] = {
    "400": (
        "Malformed request, or invalid parameters (`validation_error` with per-field `errors`)",
        ("validation_error", "malformed_json", "invalid_characters", "bad_request"),
    ),
    "401": ("No token, or an invalid, expired or revoked one", ("not_authenticated", "invalid_token", "token_expired")),
    "403": (
        "The token is for another service, or lacks the scope this needs",
        ("insufficient_scope", "invalid_audience", "permission_denied"),
    ),
    "404": ("No such resource", ("not_found",)),
    "405": ("Method not allowed", ("method_not_allowed",)),
    "406": ("Not acceptable", ("not_acceptable",)),
    "429": ("Too many requests; wait as `Retry-After` says", ("throttled",)),
    "503": (
        "The database or an upstream service is unavailable; retry later",
        ("database_unavailable", "jwks_unavailable", "upstream_unavailable"),
    ),
}
_WRITES: dict[str, tuple[str, tuple[str, ...]]] = {
    "409": ("Conflicts with the resource's current state", ("conflict",)),
    "413": ("Request body too large", ("payload_too_large",)),
    "415": ("Unsupported media type", ("unsupported_media_type",)),
    "422": ("Refused by a business rule (a stable `code` says which)", ("invalid_metadata",)),
}
_TITLES = {
    "validation_error": "Validation failed",
    "malformed_json": "Malformed JSON",
    "invalid_characters": "Invalid characters",
    "bad_request": "Bad request",
    "not_authenticated": "Authentication required",
    "invalid_token": "Invalid token",
    "token_expired": "Token expired",
    "insufficient_scope": "Insufficient scope",
    "invalid_audience": "Token is for another audience",
    "permission_denied": "Permission denied",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "not_acceptable": "Not acceptable",
    "throttled": "Too many requests",
    "database_unavailable": "Database unavailable",
    "jwks_unavailable": "Token keys unavailable",
    "upstream_unavailable": "Upstream service unavailable",
    "conflict": "Conflict",
    "payload_too_large": "Request body too large",
    "unsupported_media_type": "Unsupported media type",
    "invalid_metadata": "Invalid metadata",
}
_PROBLEM_TYPE = "application/problem+json"
_REQUEST_ID_DESCRIPTION = (
    "The request's id: give one (1 to 200 of `A-Z a-z 0-9 . _ : -`) to find this request again in logs, the "
    "audit trail and the trace page; without one, the service makes one. Every answer carries it back."
)
_SCOPE_WORDS = {"read": "read", "write": "create and change", "manage": "manage", "register": "register in"}


def problem_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: every operation documents the problem responses it may give (the
    kit's and the domain errors its view declares), each code with an example, every error response
    ``application/problem+json``; the ``X-Request-ID`` header both ways and ``Idempotent-Replayed`` where an
    ``Idempotency-Key`` is taken; and the OAuth 2.0 scopes the operations need."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components.setdefault("headers", {}).update(
        {
            "X-Request-ID": {"description": _REQUEST_ID_DESCRIPTION, "schema": {"type": "string"}},
            "Idempotent-Replayed": {
                "description": "`true` when this is the saved answer to an earlier request with the same "
                "`Idempotency-Key` (nothing was done again).",
                "schema": {"type": "string", "enum": ["true"]},
            },
        }
    )
    components.setdefault("parameters", {})["X-Request-ID"] = {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": _REQUEST_ID_DESCRIPTION,
        "schema": {"type": "string", "maxLength": 200, "pattern": "^[A-Za-z0-9._:-]+$"},
    }
    scopes: set[str] = set()
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            _document_problems(operation, method, components.setdefault("examples", {}))
            _document_headers(operation)
            for requirement in operation.get("security", []):
                scopes.update(requirement.get("oauth2", []))
    for schema in components.get("schemas", {}).values():
        _nullable_refs_allow_null(schema)
    oauth2 = components.get("securitySchemes", {}).get("oauth2")
    if oauth2:
        oauth2["flows"]["clientCredentials"]["scopes"] = {scope: _scope_words(scope) for scope in sorted(scopes)}
    return result


def _nullable_refs_allow_null(node: Any) -> None:
    """``{"allOf": [{"$ref": ...}], "nullable": true}`` (drf-spectacular's shape for a nullable field whose type
    is a component, an enum mostly) lets no null through: ``nullable`` does not reach into ``allOf`` (OpenAPI
    3.0.3), so a validator or a generated client refuses the nulls the API answers. Say it as
    ``oneOf: [the component, {"enum": [null]}]``."""
    if isinstance(node, list):
        for item in node:
            _nullable_refs_allow_null(item)
        return
    if not isinstance(node, dict):
        return
    all_of = node.get("allOf")
    if node.get("nullable") and isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
        node["oneOf"] = [node.pop("allOf")[0], {"enum": [None]}]
    for value in node.values():
        _nullable_refs_allow_null(value)


def _scope_words(scope: str) -> str:
    resource, _, action = scope.partition(":")
    return f"{_SCOPE_WORDS.get(action, action)} {resource}".capitalize()


def _document_problems(operation: dict[str, Any], method: str, shared: dict[str, Any]) -> None:
    """The operation's problem responses; each code's example is one shared component (``shared``)."""
    responses = operation["responses"]
    wanted = {status: (what, list(codes)) for status, (what, codes) in _ANY_OPERATION.items()}
    if method.lower() in ("post", "put", "patch", "delete"):
        wanted.update({status: (what, list(codes)) for status, (what, codes) in _WRITES.items()})
    titles = dict(_TITLES)
    for status, code, title in operation.pop("x-atrium-errors", []):
        what, codes = wanted.get(str(status), (title, []))
        if code not in codes:
            codes.insert(0, code)  # the operation's own codes first: they are what it is about
        wanted[str(status)] = (what, codes)
        titles.setdefault(code, title)
    examples: dict[str, dict[str, Any]] = {}
    for status, (what, codes) in wanted.items():
        response = responses.setdefault(status, {"description": what})
        response["description"] = f"{response.get('description') or what}. Codes: {', '.join(f'`{c}`' for c in codes)}."
        for code in codes:
            key = f"problem_{status}_{code}"
            title = titles.get(code, code.replace("_", " ").capitalize())
            shared.setdefault(
                key, {"summary": title, "value": problem_example(None, status=int(status), code=code, title=title)}
            )
            examples.setdefault(status, {})[code] = {"$ref": f"#/components/examples/{key}"}
    for status, response in responses.items():
        if not str(status).startswith(("4", "5")) or not isinstance(response, dict):
            continue
        content = response.get("content") or {}
        schema = next((media.get("schema") for media in content.values() if media.get("schema")), None)
        media: dict[str, Any] = {"schema": schema or {"$ref": "#/components/schemas/Problem"}}
        if examples.get(str(status)):
            media["examples"] = examples[str(status)]
        response["content"] = {_PROBLEM_TYPE: media}


def _document_headers(operation: dict[str, Any]) -> None:
    parameters = operation.setdefault("parameters", [])
    idempotent = any(p.get("in") == "header" and p.get("name") == "Idempotency-Key" for p in parameters)
    if not any(p.get("$ref") == "#/components/parameters/X-Request-ID" for p in parameters):
        parameters.append({"$ref": "#/components/parameters/X-Request-ID"})
    for status, response in operation["responses"].items():
        if not isinstance(response, dict):
            continue
        headers = response.setdefault("headers", {})
        headers["X-Request-ID"] = {"$ref": "#/components/headers/X-Request-ID"}
        if idempotent and str(status).startswith("2"):
            headers["Idempotent-Replayed"] = {"$ref": "#/components/headers/Idempotent-Replayed"}
