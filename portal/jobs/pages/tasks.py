"""The job dashboard's task list: filters from the query string, keyset pages both ways (the "newer" link reads the
same index backwards), and the known queues, services and task names to choose from. No count of the jobs
table: a list shows "more", not a total."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from django.utils.http import urlencode

from portal.jobs import selectors
from portal.jobs.models import Job
from portal.jobs.pages.common import STATES, Choice, choices, duration, form_time, known_choices, task_url
from portal.ui.text import ago
from services.kit.timestamps import timestamp_parse

PAGE_SIZE = 50


@dataclass(frozen=True)
class TaskRow:
    job: Job
    url: str
    seen_ago: str
    runtime: str


@dataclass
class TaskListPage:
    filters: selectors.TaskFilters
    form: dict[str, str]  # the form's current values
    errors: list[str]
    states: list[Choice]
    queues: list[Choice]
    services: list[Choice]
    names: list[Choice]
    rows: list[TaskRow]
    older_url: str  # the next page (older tasks), empty at the end
    newer_url: str  # the page before (newer tasks), empty on the first page
    newest_url: str
    first_page: bool
    filtered: bool
    now: dt.datetime
    housekeeping: bool  # housekeeping tasks shown (``?housekeeping=1``)
    housekeeping_hidden: bool  # left out of this list (the default, unless the filters name a task or request)
    housekeeping_url: str  # the same list with housekeeping shown / hidden


FILTER_KEYS = ("state", "queue", "service", "name", "since", "until", "request_id", "q", "exception_type", "worker")


def task_filters(params: Mapping[str, str]) -> tuple[selectors.TaskFilters, list[str]]:
    """The list's filters from a query string, and what was wrong with it (a wrong value is left out)."""
    errors = []
    values: dict[str, Any] = {k: params.get(k, "").strip() for k in FILTER_KEYS}
    if values["state"] and values["state"] not in STATES:
        errors.append(f"Unknown state {values['state']!r}: showing every state.")
        values["state"] = ""
    for key in ("since", "until"):
        if values[key]:
            try:
                values[key] = timestamp_parse(values[key])  # (``datetime-local`` sends no zone: UTC)
            except ValueError:
                errors.append(f"{key.title()} {values[key]!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC).")
                values[key] = None
        else:
            values[key] = None
    return selectors.TaskFilters(**values), errors


def task_list_page(*, params: Mapping[str, str], now: dt.datetime | None = None) -> TaskListPage:
    """A page of tasks, newest first: the first one, the one ``after`` a cursor (older) or ``before`` one
    (newer). Raises :class:`~services.kit.pagination.InvalidCursor` for a cursor it did not give out."""
    now = now or timezone.now()
    filters, errors = task_filters(params)
    shown = params.get("housekeeping", "") in ("1", "true", "yes", "on")
    filters = selectors.housekeeping_hidden(filters, shown=shown)
    qs = selectors.jobs_filter(filters)
    after, before = params.get("after", ""), params.get("before", "")
    keep = filters.as_query()
    for key in ("since", "until"):  # as the form shows them
        if key in keep:
            keep[key] = form_time(getattr(filters, key))
    found = selectors.jobs_page(qs, cursor=after or before or None, limit=PAGE_SIZE)
    if before and not after and found.previous is None:
        before = ""  # nothing newer: this is the first page
        found = selectors.jobs_page(qs, limit=PAGE_SIZE)
    rows, older_cursor, newer_cursor = found.rows, found.next, found.previous
    first_page = not after and not before
    queues, services, names = known_choices()
    form = {k: keep.get(k, "") for k in FILTER_KEYS}
    toggled = {k: v for k, v in keep.items() if k != "housekeeping"} | ({} if shown else {"housekeeping": "1"})
    if shown:
        keep["housekeeping"] = "1"
    return TaskListPage(
        filters=filters,
        form=form,
        errors=errors,
        states=choices(STATES, filters.state, "every state"),
        queues=choices(queues, filters.queue, "every queue"),
        services=choices(services, filters.service, "every service"),
        names=choices(names, filters.name, "every task"),
        rows=[TaskRow(j, task_url(j.task_id), ago(j.seen_at, now), duration(j.runtime_ms)) for j in rows],
        older_url=f"?{urlencode({**keep, 'after': older_cursor})}" if older_cursor else "",
        newer_url=f"?{urlencode({**keep, 'before': newer_cursor})}" if newer_cursor else "",
        newest_url=f"?{urlencode(keep)}" if keep else "?",
        first_page=first_page,
        filtered=bool(form and any(form.values())),
        now=now,
        housekeeping=shown,
        housekeeping_hidden=filters.hide_housekeeping,
        housekeeping_url=f"?{urlencode(toggled)}" if toggled else "?",
    )
