"""The kit's cursor pagination: keyset pages both ways, ties broken by the id, and only cursors it gave out."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from services.kit.pagination import CursorPagination, InvalidCursor, keyset_page
from services.ledger.models import Account

pytestmark = pytest.mark.django_db

ORDER = ("-created_at", "-id")


@pytest.fixture
def accounts() -> list[str]:
    """Seven accounts, the newest first; three of them created at the very same instant."""
    ids = [Account.objects.create(name=f"a{i}", currency="EUR", normal_balance="credit").id for i in range(7)]
    start = timezone.now() - dt.timedelta(hours=1)
    for index, account_id in enumerate(ids):
        at = start + dt.timedelta(seconds=min(index, 2))  # a2, a3 ... a6 share one instant
        Account.objects.filter(id=account_id).update(created_at=at)
    return [a.id for a in Account.objects.order_by(*ORDER)]


def test_next_pages_cover_every_row_once_in_order_then_previous_pages_walk_back(accounts):
    # when the list is read three at a time, forward
    seen, cursor, pages = [], None, []
    while True:
        page = keyset_page(Account.objects.all(), ordering=ORDER, cursor=cursor, limit=3)
        pages.append(page)
        seen.extend(a.id for a in page.rows)
        if page.next is None:
            break
        cursor = page.next

    # then every row comes once, in order, and the first page has no previous
    assert seen == accounts
    assert [len(p.rows) for p in pages] == [3, 3, 1]
    assert pages[0].previous is None

    # and from the last page, previous goes back through the same pages
    back = keyset_page(Account.objects.all(), ordering=ORDER, cursor=pages[-1].previous, limit=3)
    assert [a.id for a in back.rows] == accounts[3:6]
    first = keyset_page(Account.objects.all(), ordering=ORDER, cursor=back.previous, limit=3)
    assert [a.id for a in first.rows] == accounts[:3]
    assert first.previous is None


def _cursor(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        _cursor([0, ["2026-01-01T00:00:00+00:00"]]),  # one value for two fields
        _cursor([0, ["2026-01-01T00:00:00", "acc_x"]]),  # a naive time
        _cursor([0, ["2026-01-01T00:00:00+00:00", "acc_\u0000"]]),  # a NUL the database refuses
        _cursor([2, ["2026-01-01T00:00:00+00:00", "acc_x"]]),  # no such direction
        _cursor([0, [1, "acc_x"]]),  # a number for a time
        _cursor([0, ["2026-01-01T00:00:00+00:00", ["acc_x"]]]),  # a list for an id
        "W" * 600,
    ],
)
def test_a_cursor_the_list_did_not_give_out_is_invalid(accounts, cursor):
    with pytest.raises(InvalidCursor):
        keyset_page(Account.objects.all(), ordering=ORDER, cursor=cursor, limit=3)


def test_the_drf_paginator_answers_next_and_previous_links(accounts):
    # given the kit's paginator, newest first (its default ordering)
    paginator = CursorPagination()
    request = Request(APIRequestFactory().get("/api/v1/accounts", {"limit": "4", "currency": "EUR"}))

    # when the first page, then the next, is read
    rows = paginator.paginate_queryset(Account.objects.all(), request)
    body = paginator.get_paginated_response([a.id for a in rows]).data
    cursor = body["next"].split("cursor=")[1].split("&")[0]
    following = Request(APIRequestFactory().get("/api/v1/accounts", {"limit": "4", "cursor": cursor}))
    second = CursorPagination()
    rest = second.paginate_queryset(Account.objects.all(), following)

    # then the pages split the list, the links keep the other parameters, and only the second has previous
    assert body["results"] == accounts[:4]
    assert body["previous"] is None
    assert "currency=EUR" in body["next"]
    assert [a.id for a in rest] == accounts[4:]
    assert second.get_next_link() is None
    assert second.get_previous_link() is not None
