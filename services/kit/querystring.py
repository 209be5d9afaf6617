"""Query strings and paths PostgreSQL could not even compare: refused before any view sees them.

A NUL character (``%00``) in a query parameter or the path would reach a filter as text that PostgreSQL refuses
(a DataError, so a 500); it is the client's ``400 invalid_characters``, as NUL in a JSON body is.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from services.kit.errors import problem_response


class QueryStringCheckMiddleware:
    """Refuse NUL in the query string or the path (400 ``invalid_characters``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if "%00" in query or "\x00" in query or "\x00" in request.path:
            return problem_response(
                request,
                status_code=400,
                code="invalid_characters",
                title="Invalid characters",
                detail="The path and query parameters must not contain NUL (%00) characters.",
            )
        return self.get_response(request)
