"""The URL rule (services/kit/canonical_urls.py) as a contract: each suite imports these tests, so each
process's URLconf (its ROOT_URLCONF, under its own settings) is walked and proven.

A route is a chain of URL patterns ending in a view; its sample path fills every capture with ``SAMPLE``.
The admin (``admin/...``) keeps Django's slash convention and is left out, as are the kit's catch-all 404
and the portal's bare ``/`` (a redirect to the admin).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RegexPattern, RoutePattern

from services.kit.canonical_urls import NOT_FOUND_NAME

SAMPLE = "sample1"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Route:
    chain: tuple[RoutePattern | RegexPattern, ...]
    name: str
    sample: str  # "/api/v1/transactions/sample1/post"

    def matches(self, path: str) -> bool:
        """Whether this route's patterns (converters included) match ``path``, whatever comes before it."""
        remaining = path.removeprefix("/")
        for pattern in self.chain:
            match = pattern.match(remaining)
            if match is None:
                return False
            remaining = match[0]
        return remaining == ""


def routes(urlconf: str | None = None) -> list[Route]:
    """Every route of ``urlconf`` (default: the settings' ROOT_URLCONF) but the admin's, the kit's catch-all
    and the bare root."""
    found: list[Route] = []
    _walk(get_resolver(urlconf or settings.ROOT_URLCONF).url_patterns, (), (), found)
    return [route for route in found if route.sample != "/"]


def _walk(
    entries: list[URLPattern | URLResolver],
    chain: tuple[RoutePattern | RegexPattern, ...],
    namespaces: tuple[str, ...],
    found: list[Route],
) -> None:
    for entry in entries:
        if not chain and _text(entry.pattern).startswith("admin/"):
            continue
        if isinstance(entry, URLResolver):
            spaces = (*namespaces, entry.namespace) if entry.namespace else namespaces
            _walk(entry.url_patterns, (*chain, entry.pattern), spaces, found)
        elif entry.name != NOT_FOUND_NAME:
            whole = (*chain, entry.pattern)
            name = ":".join((*namespaces, entry.name or ""))
            found.append(Route(whole, name, "/" + "".join(_sample(p) for p in whole)))


def _text(pattern: RoutePattern | RegexPattern) -> str:
    return str(pattern).removeprefix("^")


def _sample(pattern: RoutePattern | RegexPattern) -> str:
    """The pattern's literal text with every capture replaced by ``SAMPLE``."""
    text = str(pattern)
    if isinstance(pattern, RoutePattern):
        return re.sub(r"<[^>]+>", SAMPLE, text)
    text = text.removeprefix("^").removesuffix("$").removesuffix(r"\Z")
    out, i = [], 0
    while i < len(text):
        if text.startswith("(", i):  # a group: skip to its closing parenthesis
            depth = 0
            while True:
                if text[i] == "\\":
                    i += 2
                    continue
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
                if depth == 0:
                    break
            out.append(SAMPLE)
        elif text[i] == "\\":
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def test_every_route_is_named_once_and_spelled_without_a_trailing_slash(client):
    # given every route of this process
    found = routes()
    assert len(found) > 5

    # then each has its own name and no trailing slash
    names = [route.name for route in found]
    assert all(names), [route.sample for route in found if not route.name]
    assert len(set(names)) == len(names), sorted(names)
    assert [route.sample for route in found if route.sample.endswith("/")] == []
    # and so has every path of the OpenAPI document
    paths = client.get("/api/schema", HTTP_ACCEPT="application/json").json()["paths"]
    assert paths
    assert [path for path in paths if path.endswith("/")] == []


def test_the_slashed_spelling_of_every_route_answers_308_to_it_for_every_method(client):
    failures = []
    for route in routes():
        for method in METHODS:
            # when the route is called with a trailing slash (and a query string)
            response = client.generic(method, f"{route.sample}/?limit=5", "{}", content_type="application/json")

            # then it is sent, method and body kept, to its canonical spelling, query string kept
            got = (response.status_code, response.headers.get("Location"))
            if got != (308, f"{route.sample}?limit=5"):
                failures.append((method, route.sample, got))
    assert failures == []


def test_no_route_captures_the_literal_path_of_another(client):
    found = routes()
    for route in found:
        # the sample path of each route resolves to that route
        assert resolve(route.sample).view_name == route.name, route.sample
        # and no other route's patterns match it: no capture takes a sibling's literal word as an id
        captured_by = [other.name for other in found if other is not route and other.matches(route.sample)]
        assert captured_by == [], (route.sample, captured_by)
