"""What the home reads: every service's status (the catalog), the payments of the last hour and day (the payments
service's API), failing jobs and queue backlogs (the job dashboard), the audit trail's latest signed head.

Each read stands alone: one that fails (the broker away, payments away) is reported in its tile and never takes
the page down. The catalog is read in :func:`services_now` only, so that it is the one place to change when the
catalog's notion of a service changes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Sum

from portal.audit import selectors as audit_selectors
from portal.catalog import selectors as catalog_selectors
from portal.home.payments import PaymentsUnavailable, payments_stats
from portal.jobs import selectors as jobs_selectors
from portal.jobs.selectors import TaskFilters

PAYMENT_WINDOWS = ("1h", "24h")


# ------------------------------------------------------------------------------------------------- services


@dataclass(frozen=True)
class ServiceNow:
    slug: str
    name: str
    status: str  # critical, degraded, passing, unknown (portal/catalog/systems.py)
    reason: str  # why, in words ("down: worker-ledger"); "" when passing
    processes: int  # how many processes it has (web, workers, relay, beat, monitor)
    processes_up: int  # of those, passing
    base_url: str  # its API's; "" for a service without a web process
    docs_url: str
    openapi_url: str
    last_checked_at: dt.datetime | None


def services_now(*, now: dt.datetime) -> list[ServiceNow]:
    """Every service (processes grouped by the service they are part of) with its status, by slug (three
    queries, whatever their number)."""
    found = []
    for group in catalog_selectors.service_groups(now=now, with_uptime=False):
        web = group.web
        found.append(
            ServiceNow(
                slug=group.slug,
                name=group.display_name or group.slug,
                status=group.status,
                reason=group.reason,
                processes=len(group.processes),
                processes_up=sum(1 for p in group.processes if p.status == "passing"),
                base_url=web.base_url if web else "",
                docs_url=web.docs_url if web else "",
                openapi_url=web.openapi_url if web else "",
                last_checked_at=web.last_checked_at if web else None,
            )
        )
    return found


# ------------------------------------------------------------------------------------------------- payments


@dataclass(frozen=True)
class PaymentsNow:
    """The payments service's stats per window (``1h``, ``24h``), or why there are none."""

    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: str = ""


def payments_now() -> PaymentsNow:
    """Both windows from ``GET /api/v1/payments/stats``: the hour's asked each time (so payments being away shows
    at once), the day's at most every ``HOME_PAYMENTS_DAY_SECONDS``; the first failure ends the reading."""
    max_age = {"1h": 0.0, "24h": float(settings.HOME_PAYMENTS_DAY_SECONDS)}
    windows = {}
    for window in PAYMENT_WINDOWS:
        try:
            windows[window] = payments_stats(window=window, max_age=max_age[window])
        except PaymentsUnavailable as exc:
            return PaymentsNow(unavailable=exc.reason)
    return PaymentsNow(windows=windows)


# ------------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class FailureGroup:
    exception_type: str
    name: str
    count: int
    last_seen: dt.datetime
    example_task_id: str


@dataclass(frozen=True)
class QueueNow:
    name: str
    depth: int | None
    oldest_age_seconds: float | None


@dataclass
class JobsNow:
    failed_hour: int  # tasks that failed in the last hour (the per-minute counts)
    failed_day: int
    failures: list[FailureGroup]  # the last day's, biggest group first
    queues: list[QueueNow]
    queues_error: str  # the broker did not answer: depths unknown


def jobs_now(*, now: dt.datetime, failure_groups: int = 5) -> JobsNow:
    """Failed tasks in the last hour and day, the day's failures grouped by exception, every queue's backlog."""
    day = now - dt.timedelta(days=1)
    hour = now - dt.timedelta(hours=1)
    failed_day = jobs_selectors.job_minutes_since(day).aggregate(n=Sum("failed"))["n"]
    failed_hour = jobs_selectors.job_minutes_since(hour).aggregate(n=Sum("failed"))["n"]
    failures = [
        FailureGroup(g["exception_type"], g["name"], g["count"], g["last_seen"], g["example_task_id"])
        for g in jobs_selectors.failures_grouped(TaskFilters(since=day), limit=failure_groups)
    ]
    try:
        queues = [QueueNow(q["name"], q["depth"], q["oldest_age_seconds"]) for q in jobs_selectors.queues_live()]
        queues_error = ""
    except Exception as exc:  # the broker away must not take the home down with it
        queues, queues_error = [], f"The broker did not answer ({type(exc).__name__}): backlogs are unknown."
    return JobsNow(
        failed_hour=int(failed_hour or 0),
        failed_day=int(failed_day or 0),
        failures=failures,
        queues=queues,
        queues_error=queues_error,
    )


# ------------------------------------------------------------------------------------------------- audit


def audit_now() -> audit_selectors.HeadStatus:
    """The latest signed head and its quick checks (signature, matches the chain), as the audit list shows them."""
    return audit_selectors.head_status()
