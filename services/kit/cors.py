"""Cross-origin access for one endpoint at a time: the portal's token endpoint, called by the services' API docs.

Swagger UI's "Authorize" (client credentials) posts to the portal's token URL from the page of a service's
``/api/docs`` — another origin — with a form body and HTTP Basic credentials, so the browser first sends a
preflight ``OPTIONS``. Only the origins given are allowed (never ``*``: the answer carries a token), and no
cookies are involved (credentials are not allowed).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

ALLOWED_HEADERS = ("authorization", "content-type", "x-requested-with", "x-request-id")
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After")
MAX_AGE_SECONDS = 600


def cors_allow(request: HttpRequest, response: HttpResponse, *, origins: Iterable[str]) -> HttpResponse:
    """Let ``request``'s origin read ``response`` when it is one of ``origins``."""
    patch_vary_headers(response, ("Origin",))
    origin = request.headers.get("Origin", "")
    if origin and origin in set(origins):
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
    return response


def cors_preflight(request: HttpRequest, *, origins: Iterable[str], methods: Iterable[str]) -> HttpResponse:
    """The answer to a preflight ``OPTIONS``: 204, and the permissions only for an allowed origin."""
    response = cors_allow(request, HttpResponse(status=204), origins=origins)
    if response.has_header("Access-Control-Allow-Origin"):
        response["Access-Control-Allow-Methods"] = ", ".join(methods)
        response["Access-Control-Allow-Headers"] = ", ".join(ALLOWED_HEADERS)
        response["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
    response["Allow"] = ", ".join([*methods, "OPTIONS"])
    return response
