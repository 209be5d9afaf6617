"""Cursor pagination: keyset pages, stable under inserts, no COUNT(*): the one way every Atrium list pages.

A page is the rows just after (or just before) the cursor's row in the list's ordering, read along the
ordering's index: ``WHERE (a < :a) OR (a = :a AND id < :id) ORDER BY a DESC, id DESC LIMIT n + 1``. The
ordering's last field must be unique (an id) so that every row has one place. A cursor is opaque to clients:
base64url JSON of its direction and the row's ordering values; one the list did not give out is a 400
``invalid_cursor``, never a database error.

:class:`CursorPagination` serves DRF lists (``{"next", "previous", "results"}``, ``?cursor=`` and ``?limit=``);
:func:`keyset_page` is the same for anything else (the job dashboard's pages).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q, QuerySet
from rest_framework import pagination
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from services.kit.errors import DomainError

CURSOR_MAX_CHARS = 500
_BIGINT = 2**63


class InvalidCursor(DomainError):
    code = "invalid_cursor"
    status = 400
    title = "Invalid cursor"


@dataclass(frozen=True)
class KeysetPage:
    """A page's rows in the list's order, the cursor to the rows after it (``next``) and to those before it
    (``previous``); None where there are none (``previous`` on the first page)."""

    rows: list[Any]
    next: str | None
    previous: str | None


@dataclass(frozen=True)
class _Key:
    name: str
    field: models.Field
    descending: bool


def _keys(queryset: QuerySet, ordering: Sequence[str]) -> list[_Key]:
    meta = queryset.model._meta
    keys = []
    for item in ordering:
        name = item.lstrip("-")
        field = meta.pk if name == "pk" else meta.get_field(name)
        keys.append(_Key(field.attname, field, item.startswith("-")))
    return keys


def _cursor(row: Any, keys: list[_Key], *, before: bool) -> str:
    values = []
    for key in keys:
        value = getattr(row, key.name)
        values.append(value.isoformat() if isinstance(value, dt.datetime) else value)
    raw = json.dumps([int(before), values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _value(field: models.Field, raw: Any) -> Any:
    """A cursor's value for ``field``, checked so that the query cannot fail on it."""
    if isinstance(field, models.DateTimeField):
        moment = dt.datetime.fromisoformat(raw) if isinstance(raw, str) else None
        if moment is None or moment.tzinfo is None:
            raise ValueError("not an aware date-time")
        return moment
    if isinstance(field, models.IntegerField):
        if type(raw) is not int or not -_BIGINT <= raw < _BIGINT:
            raise ValueError("not an integer in range")
        return raw
    if isinstance(raw, str) and "\x00" in raw:
        raise ValueError("a NUL character")
    if not isinstance(raw, str | int | float):
        raise ValueError("not a plain value")
    return field.to_python(raw)


def _decode(cursor: str, keys: list[_Key]) -> tuple[list[Any], bool]:
    try:
        if len(cursor) > CURSOR_MAX_CHARS:
            raise ValueError("too long")
        before, raw = json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
        if before not in (0, 1) or not isinstance(raw, list) or len(raw) != len(keys):
            raise ValueError("not a cursor of this list")
        return [_value(key.field, value) for key, value in zip(keys, raw, strict=True)], bool(before)
    except (ValueError, TypeError, RecursionError, ValidationError) as exc:
        raise InvalidCursor("The cursor is not one this list gave out.") from exc


def _beyond(keys: list[_Key], values: list[Any], *, before: bool) -> Q:
    """Rows after the position ``values`` in the ordering (before it if ``before``)."""
    condition = Q()
    for index, key in enumerate(keys):
        equal = {k.name: v for k, v in zip(keys[:index], values[:index], strict=True)}
        lookup = "lt" if key.descending != before else "gt"
        condition |= Q(**equal, **{f"{key.name}__{lookup}": values[index]})
    return condition


def keyset_page(queryset: QuerySet, *, ordering: Sequence[str], cursor: str | None, limit: int) -> KeysetPage:
    """The page of ``queryset`` in ``ordering`` (its last field unique) at ``cursor`` (None: the first page),
    of at most ``limit`` rows; :class:`InvalidCursor` for a cursor this list did not give out."""
    keys = _keys(queryset, ordering)
    order = [("-" if key.descending else "") + key.name for key in keys]
    if not cursor:
        rows = list(queryset.order_by(*order)[: limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        return KeysetPage(rows, _cursor(rows[-1], keys, before=False) if more else None, None)
    values, before = _decode(cursor, keys)
    if not before:
        rows = list(queryset.filter(_beyond(keys, values, before=False)).order_by(*order)[: limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        newer = _cursor(rows[0], keys, before=True) if rows else None
        return KeysetPage(rows, _cursor(rows[-1], keys, before=False) if more else None, newer)
    reverse = [name[1:] if name.startswith("-") else f"-{name}" for name in order]
    rows = list(queryset.filter(_beyond(keys, values, before=True)).order_by(*reverse)[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit][::-1]
    older = _cursor(rows[-1], keys, before=False) if rows else None
    return KeysetPage(rows, older, _cursor(rows[0], keys, before=True) if more else None)


class CursorPagination(pagination.CursorPagination):
    """Newest first by default; ``?limit=`` up to 200. DRF's interface and OpenAPI description, the kit's
    keyset pages (:func:`keyset_page`): ``ordering`` must end with a unique field."""

    ordering: str | Sequence[str] = ("-created_at", "-pk")
    page_size_query_param = "limit"
    max_page_size = 200

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list[Any]:
        self.request = request
        self.base_url = request.build_absolute_uri()
        self.page_size = self.get_page_size(request)
        ordering = (self.ordering,) if isinstance(self.ordering, str) else tuple(self.ordering)
        self.keyset = keyset_page(
            queryset,
            ordering=ordering,
            cursor=request.query_params.get(self.cursor_query_param),
            limit=self.page_size,
        )
        return self.keyset.rows

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """DRF's page shape, described for the API reference (DRF's own examples name an accounts URL)."""
        page = super().get_paginated_response_schema(schema)
        links = {
            "next": "The next page (the same filters and a cursor), or null on the last page.",
            "previous": "The previous page, or null on the first page.",
        }
        for name, description in links.items():
            page["properties"][name] = {
                "type": "string",
                "format": "uri",
                "nullable": True,
                "description": description,
                "example": f"https://atrium.example.com/api/v1/…?{self.cursor_query_param}=cD0yMDI2LTEyLTA0",
            }
        return page

    def get_next_link(self) -> str | None:
        cursor = self.keyset.next
        return replace_query_param(self.base_url, self.cursor_query_param, cursor) if cursor else None

    def get_previous_link(self) -> str | None:
        cursor = self.keyset.previous
        return replace_query_param(self.base_url, self.cursor_query_param, cursor) if cursor else None


class IdCursor(CursorPagination):
    """Newest first by id: Atrium's ids are time-ordered and unique."""

    ordering = "-id"
