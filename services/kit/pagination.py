"""Cursor pagination: stable under inserts, no COUNT(*)."""

from __future__ import annotations

from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Newest first by default; ``?limit=`` up to 200."""

    ordering = "-created_at"
    page_size_query_param = "limit"
    max_page_size = 200
