"""The home page's data: what :mod:`portal.home.selectors` read, shaped for the template, each tile only for those
whose role may see it (the catalog: ``catalog.view_service``; jobs and the trace: ``jobs.view_job``; the audit
trail: ``audit.view_auditevent``; payments: any portal role)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.urls import reverse
from django.utils import timezone

from portal.audit.selectors import HeadStatus
from portal.catalog.pages.common import safe_link, service_url
from portal.catalog.systems import SERVICE_STATUSES
from portal.home import selectors
from portal.identity.roles import user_roles
from portal.jobs.pages.common import age, form_time, task_url, tasks_url
from portal.ui.text import ago
from services.kit.currencies import MINOR_UNITS

CATALOG_PERMISSION = "catalog.view_service"
JOBS_PERMISSION = "jobs.view_job"
AUDIT_PERMISSION = "audit.view_auditevent"
QUEUE_AGE_WARNING_SECONDS = 60  # as the job dashboard's overview


def money(amount: int, currency: str) -> str:
    """``12,345.67 EUR`` from minor units (a currency the kit does not know: its minor units as they are)."""
    units = MINOR_UNITS.get(currency)
    if units is None:
        return f"{amount:,} {currency} (minor units)"
    major, minor = divmod(abs(amount), 10**units)
    sign = "-" if amount < 0 else ""
    return f"{sign}{major:,}.{minor:0{units}d} {currency}" if units else f"{sign}{major:,} {currency}"


@dataclass(frozen=True)
class Link:
    label: str
    url: str
    note: str = ""


@dataclass(frozen=True)
class ServiceTile:
    slug: str
    name: str
    status: str
    url: str  # its catalog page
    admin_url: str  # "" without a web server
    api_docs_url: str
    last_checked: str
    reason: str = ""  # why it is not passing, in words
    processes: str = ""  # "3 of 4 processes passing"


@dataclass(frozen=True)
class PaymentRow:
    status: str
    counts: list[int]  # per window
    amounts: list[list[str]]  # per window, one "12.00 EUR" per currency


@dataclass
class PaymentsTile:
    windows: list[str]
    totals: list[int]
    rows: list[PaymentRow]
    unavailable: str
    as_of: list[str] = field(default_factory=list)  # per window: when payments read it (HH:MM:SS UTC)


def _clock(value: Any) -> str:
    """``01:02:03 UTC`` from an ISO 8601 time payments gave ("" if it is not one)."""
    try:
        return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC).strftime("%H:%M:%S UTC")
    except ValueError:
        return ""


@dataclass(frozen=True)
class QueueTile:
    name: str
    depth: int | None
    oldest_age: str
    level: str  # ok, waiting, unknown
    url: str


@dataclass(frozen=True)
class FailureTile:
    exception_type: str
    name: str
    count: int
    last_seen_ago: str
    url: str  # the failed tasks of that name and exception
    example_url: str


@dataclass
class JobsTile:
    failed_hour: int
    failed_day: int
    failures: list[FailureTile]
    queues: list[QueueTile]
    queues_error: str
    backlog: int  # messages waiting, every queue
    failures_url: str
    failed_hour_url: str


@dataclass
class HomePage:
    now: dt.datetime
    services: list[ServiceTile] | None  # None: not for this user
    status_counts: list[tuple[str, int]]
    payments: PaymentsTile | None
    jobs: JobsTile | None
    audit: HeadStatus | None
    audit_url: str
    tools: list[Link]
    service_admins: list[Link] = field(default_factory=list)


def _services(now: dt.datetime) -> list[ServiceTile]:
    tiles = []
    for s in selectors.services_now(now=now):
        base = safe_link(s.base_url).rstrip("/")
        tiles.append(
            ServiceTile(
                slug=s.slug,
                name=s.name,
                status=s.status,
                url=service_url(s.slug),
                admin_url=f"{base}/admin/" if base else "",
                api_docs_url=f"{base}/api/docs" if base and safe_link(s.openapi_url) else "",
                last_checked=ago(s.last_checked_at, now),
                reason=s.reason,
                processes=f"{s.processes_up} of {s.processes} process{'es' if s.processes != 1 else ''} passing",
            )
        )
    return tiles


def _payments() -> PaymentsTile:
    found = selectors.payments_now()
    windows = list(selectors.PAYMENT_WINDOWS)
    if not found.unavailable:
        try:
            return _payments_tile(windows, found.windows)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a document not as documented
            return PaymentsTile(
                windows, [], [], f"payments answered an unexpected document ({type(exc).__name__}: {exc})"
            )
    return PaymentsTile(windows=windows, totals=[], rows=[], unavailable=found.unavailable)


def _payments_tile(windows: list[str], documents: dict[str, dict[str, Any]]) -> PaymentsTile:
    per_window: list[dict[str, dict[str, Any]]] = [{s["status"]: s for s in documents[w]["statuses"]} for w in windows]
    statuses = list(per_window[-1])  # the day's order: every status, in life-cycle order
    rows = [
        PaymentRow(
            status=str(status),
            counts=[int(by.get(status, {}).get("count", 0)) for by in per_window],
            amounts=[
                [money(int(a["amount"]), str(a["currency"])) for a in by.get(status, {}).get("amounts", [])]
                for by in per_window
            ],
        )
        for status in statuses
    ]
    return PaymentsTile(
        windows=windows,
        totals=[int(documents[w]["count"]) for w in windows],
        rows=rows,
        unavailable="",
        as_of=[_clock(documents[w].get("until")) for w in windows],
    )


def _jobs(now: dt.datetime) -> JobsTile:
    found = selectors.jobs_now(now=now)
    day, hour = form_time(now - dt.timedelta(days=1)), form_time(now - dt.timedelta(hours=1))
    queues = []
    for q in found.queues:
        oldest = q.oldest_age_seconds
        level = "unknown" if q.depth is None else "waiting" if (oldest or 0) >= QUEUE_AGE_WARNING_SECONDS else "ok"
        queues.append(QueueTile(q.name, q.depth, age(oldest) if q.depth else "", level, tasks_url(queue=q.name)))
    return JobsTile(
        failed_hour=found.failed_hour,
        failed_day=found.failed_day,
        failures=[
            FailureTile(
                exception_type=f.exception_type or "(no exception type)",
                name=f.name,
                count=f.count,
                last_seen_ago=ago(f.last_seen, now),
                url=tasks_url(state="failed", name=f.name, exception_type=f.exception_type, since=day),
                example_url=task_url(f.example_task_id),
            )
            for f in found.failures
        ],
        queues=queues,
        queues_error=found.queues_error,
        backlog=sum(q.depth or 0 for q in found.queues),
        failures_url=reverse("jobs_pages:failures"),
        failed_hour_url=tasks_url(state="failed", since=hour),
    )


def _tools(user: Any) -> list[Link]:
    tools = []
    if user.has_perm(CATALOG_PERMISSION):
        tools += [
            Link("Catalog overview", reverse("catalog_pages:overview"), "every service, its status and uptime"),
            Link("Dependency graph", reverse("catalog_pages:graph"), "who calls whom, declared and observed"),
        ]
    if user.has_perm(JOBS_PERMISSION):
        tools += [
            Link("Job dashboard", reverse("jobs_pages:overview"), "queues, workers, throughput, failures"),
            Link("Schedule", reverse("jobs_pages:schedule"), "periodic tasks: last and next run, run now, pause"),
            Link("Trace", reverse("trace_pages:trace"), "everything one id caused"),
        ]
    if user.has_perm(AUDIT_PERMISSION):
        tools.append(Link("Audit trail", reverse("admin:audit_auditevent_changelist"), "who did what, signed"))
    tools.append(Link("Every model", "#home-models", "the admin's list of what it manages, below"))
    return tools


def home_page(*, user: Any, now: dt.datetime | None = None) -> HomePage:
    """The tiles ``user`` may see, each read now."""
    now = now or timezone.now()
    services = _services(now) if user.has_perm(CATALOG_PERMISSION) else None
    counts = {s: 0 for s in SERVICE_STATUSES}
    for tile in services or []:
        counts[tile.status] = counts.get(tile.status, 0) + 1
    return HomePage(
        now=now,
        services=services,
        status_counts=[(s, n) for s, n in counts.items() if n],
        payments=_payments() if user_roles(user) else None,
        jobs=_jobs(now) if user.has_perm(JOBS_PERMISSION) else None,
        audit=selectors.audit_now() if user.has_perm(AUDIT_PERMISSION) else None,
        audit_url=reverse("admin:audit_auditevent_changelist"),
        tools=_tools(user),
        service_admins=[Link(s.name, s.admin_url) for s in services or [] if s.admin_url],
    )
