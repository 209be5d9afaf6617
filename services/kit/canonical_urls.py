"""The URL rule of every Atrium process: one spelling per route, without a trailing slash.

Every API route (``/api/v1/...``), ``/api/schema``, ``/api/docs``, ``/.well-known/...``, ``/health/...`` and
``/metrics`` is spelled without a trailing slash, as Stripe does, and only that spelling is in the OpenAPI
schema. The other spelling (one trailing slash added) answers ``308 Permanent Redirect`` to the canonical URL,
query string kept, for every method: a 308 tells the client to repeat the same method with the same body, so
it is never a different resource. The Django admin (``/admin/...``, the catalog and job pages included) keeps
Django's own convention, a trailing slash: its slashed paths resolve to admin views and are never redirected.

A route's capture never takes a word that a sibling route spells literally (``transactions/batch`` is never
the transaction ``batch``): see :func:`id_segment`. ``tests/url_rule.py`` proves the rule for each
process's URLconf.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.urls import Resolver404, resolve
from django.utils.encoding import escape_uri_path

# The name of the kit's last pattern, which answers every path no route claims (services/kit/urls.py).
NOT_FOUND_NAME = "not-found"


def id_segment(*reserved: str) -> str:
    """A regex for one path segment holding an id, refusing the literal words ``reserved`` (the action paths
    of sibling routes), so that the order of the patterns is not all that keeps an action from being an id."""
    if not reserved:
        return r"[^/]+"
    words = "|".join(re.escape(word) for word in reserved)
    return rf"(?!(?:{words})(?:/|$))[^/]+"


def canonical_location(request: HttpRequest) -> str | None:
    """Where the slashed spelling of a route lives (its path without the trailing slash, query string kept),
    or None: the path has no trailing slash, resolves to a route as it is, or means nothing without it."""
    path = request.path_info
    if len(path) < 2 or not path.endswith("/"):
        return None
    urlconf = getattr(request, "urlconf", None)
    if _is_route(path, urlconf) or not _is_route(path[:-1], urlconf):
        return None
    location = escape_uri_path(request.path[:-1])
    query = request.META.get("QUERY_STRING", "")
    return f"{location}?{query}" if query else location


def _is_route(path: str, urlconf: str | None) -> bool:
    try:
        match = resolve(path, urlconf)
    except Resolver404:
        return False
    return match.url_name != NOT_FOUND_NAME


class CanonicalPathMiddleware:
    """Answer the slashed spelling of a route with ``308`` to the canonical one, before anything reads the body.

    Canonical paths (no trailing slash) pass through after one ``endswith`` check; a slashed path costs two
    URL resolutions.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        location = canonical_location(request)
        if location is not None:
            return HttpResponsePermanentRedirect(location, preserve_request=True)
        return self.get_response(request)
