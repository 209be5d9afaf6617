"""The job dashboard's pages in the admin: overview, task list, a task, failures; and the operator's actions.

Each page is an admin view (login, staff, the admin's header and breadcrumbs) that needs ``jobs.view_job``;
what it shows is built in :mod:`portal.jobs.pages`. The live region of a page is kept up to date without a
reload by the catalog's ``static/catalog/live.js`` (``?fragment=1``, ``?refresh=N``, ``?refresh=0``), as the
catalog pages are: the overview, the task list's first page, and a task's page until the task has finished.

The schedule page lists the periodic tasks; run-now needs ``jobs.run_periodic``, pause and resume
``jobs.pause_periodic`` (operator, admin).

Retry and revoke need ``jobs.retry_job`` / ``jobs.revoke_job`` (403 otherwise), are POSTs with the CSRF token,
and call :mod:`portal.jobs.services` (which audits them); a refusal is an admin message, never an error page.
A retry lands on the new task's page; until the monitor records that task, the page says it was published and
is waiting (this session remembers which ids it published), rather than 404.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_POST
from kombu.exceptions import KombuError

from portal.jobs import selectors, services
from portal.jobs.pages.common import task_url, tasks_url
from portal.jobs.pages.failures import failure_group_retry, failures_page
from portal.jobs.pages.overview import overview_page
from portal.jobs.pages.schedule import schedule_page
from portal.jobs.pages.task import task_page
from portal.jobs.pages.tasks import FILTER_KEYS, task_list_page
from portal.ui.live import admin_page, render_live
from services.kit.errors import DomainError
from services.kit.pagination import InvalidCursor

VIEW_PERMISSION = "jobs.view_job"
RETRY_PERMISSION = "jobs.retry_job"
REVOKE_PERMISSION = "jobs.revoke_job"
RUN_PERIODIC_PERMISSION = "jobs.run_periodic"
PAUSE_PERIODIC_PERMISSION = "jobs.pause_periodic"
# new task id -> the task it re-runs ("" for a periodic task run now), for the page of a task not yet recorded
RETRIED_SESSION_KEY = "jobs_retried"
RETRIED_REMEMBERED = 50
# A broker that cannot be reached: the action did not happen, and the page says so.
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (KombuError, OSError)

jobs_view = admin_page(VIEW_PERMISSION)


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


def _render(
    request: HttpRequest,
    *,
    page: str,
    title: str,
    context: dict[str, Any],
    crumbs: list[tuple[str, str]],
    live: bool = True,
    template: str = "",
) -> HttpResponse:
    """The full page, or with ``?fragment=1`` only its live region (the same include)."""
    return render_live(
        request,
        templates="admin/jobs",
        page=page,
        title=title,
        context={
            **context,
            "can_retry": request.user.has_perm(RETRY_PERMISSION),
            "can_revoke": request.user.has_perm(REVOKE_PERMISSION),
            "can_run_periodic": request.user.has_perm(RUN_PERIODIC_PERMISSION),
            "can_pause_periodic": request.user.has_perm(PAUSE_PERIODIC_PERMISSION),
        },
        crumbs=crumbs,
        nav=[
            ("overview", "Overview", reverse("jobs_pages:overview")),
            ("tasks", "Tasks", reverse("jobs_pages:tasks")),
            ("failures", "Failures", reverse("jobs_pages:failures")),
            ("schedule", "Schedule", reverse("jobs_pages:schedule")),
        ],
        live=live,
        template=template,
    )


@jobs_view
def overview(request: HttpRequest) -> HttpResponse:
    found = overview_page(window=request.GET.get("range", "1h"))
    return _render(request, page="overview", title="Background jobs", context={"overview": found}, crumbs=[])


@jobs_view
def tasks(request: HttpRequest) -> HttpResponse:
    params = request.GET.dict()
    q = params.get("q", "").strip()
    if q and not any(params.get(k) for k in FILTER_KEYS if k != "q") and selectors.job_get(q):
        return HttpResponseRedirect(task_url(q))  # a whole task id: straight to it
    try:
        found = task_list_page(params=params)
    except InvalidCursor as exc:
        messages.error(request, f"{exc.detail} Showing the newest tasks.")
        kept = {k: v for k, v in params.items() if k in FILTER_KEYS and v}
        return HttpResponseRedirect(tasks_url(**kept))
    for error in found.errors:
        messages.warning(request, error)
    return _render(
        request,
        page="tasks",
        title="Tasks",
        context={"tasks": found},
        crumbs=[],
        live=found.first_page,
    )


def _remember_retry(request: HttpRequest, new_id: str, original: str) -> None:
    remembered = dict(request.session.get(RETRIED_SESSION_KEY, {}))
    remembered[new_id] = original
    request.session[RETRIED_SESSION_KEY] = dict(list(remembered.items())[-RETRIED_REMEMBERED:])


@jobs_view
def task(request: HttpRequest, task_id: str) -> HttpResponse:
    job = selectors.job_get(task_id)
    crumbs = [("Tasks", reverse("jobs_pages:tasks"))]
    if job is None:
        retry_of = request.session.get(RETRIED_SESSION_KEY, {}).get(task_id)
        if retry_of is None:
            raise Http404(f"No task {task_id!r} has been recorded.")
        context = {
            # retry_of "": sent by "run now" from the schedule page
            "pending": {
                "task_id": task_id,
                "retry_of": retry_of,
                "retry_of_url": task_url(retry_of) if retry_of else "",
            },
            "task_id": task_id,
        }
        return _render(request, page="task", title=f"Task {task_id}", context=context, crumbs=crumbs)
    found = task_page(job=job)
    return _render(
        request,
        page="task",
        title=job.name or f"Task {task_id}",
        context={"task": found, "task_id": task_id},
        crumbs=crumbs,
        live=not found.finished,
    )


@jobs_view
@require_POST
def task_retry(request: HttpRequest, task_id: str) -> HttpResponse:
    _require(request, RETRY_PERMISSION)
    try:
        new_id = services.job_retry(task_id=task_id)
    except DomainError as exc:
        messages.error(request, f"Not retried: {exc.detail}")
        return HttpResponseRedirect(task_url(task_id))
    except PUBLISH_ERRORS as exc:
        messages.error(request, f"Not retried: the broker could not be reached ({type(exc).__name__}).")
        return HttpResponseRedirect(task_url(task_id))
    _remember_retry(request, new_id, task_id)
    messages.success(
        request,
        format_html(
            'Task <a href="{}">{}</a> was published again as {} (this page).',
            task_url(task_id),
            task_id,
            new_id,
        ),
    )
    return HttpResponseRedirect(task_url(new_id))


@jobs_view
@require_http_methods(["GET", "POST"])
def task_revoke(request: HttpRequest, task_id: str) -> HttpResponse:
    """GET: the confirmation (with "terminate if running"); POST: revoke."""
    _require(request, REVOKE_PERMISSION)
    job = selectors.job_get(task_id)
    if job is None:
        raise Http404(f"No task {task_id!r} has been recorded.")
    if request.method == "POST":
        terminate = request.POST.get("terminate") == "on"
        try:
            services.job_revoke(task_id=task_id, terminate=terminate)
        except DomainError as exc:
            messages.error(request, f"Not revoked: {exc.detail}")
        except PUBLISH_ERRORS as exc:
            messages.error(request, f"Not revoked: the broker could not be reached ({type(exc).__name__}).")
        else:
            how = " and its process was sent SIGTERM if it was running" if terminate else ""
            messages.success(request, f"Task {task_id} was revoked{how}: workers discard it.")
        return HttpResponseRedirect(task_url(task_id))
    return _render(
        request,
        page="revoke",
        title=f"Revoke {job.name}?",
        context={"job": job, "task_url": task_url(task_id)},
        crumbs=[("Tasks", reverse("jobs_pages:tasks")), (job.task_id, task_url(task_id))],
        live=False,
    )


@jobs_view
def failures(request: HttpRequest) -> HttpResponse:
    found = failures_page(params=request.GET.dict())
    return _render(request, page="failures", title="Failures", context={"failures": found}, crumbs=[])


@jobs_view
@require_http_methods(["GET", "POST"])
def failures_retry(request: HttpRequest) -> HttpResponse:
    """GET: how many tasks of a failure group a retry would publish again; POST: retry them (bounded)."""
    _require(request, RETRY_PERMISSION)
    source = request.POST if request.method == "POST" else request.GET
    params = {k: source.get(k, "") for k in ("exception_type", "name", "range", "queue")}
    group = failure_group_retry(params=params)
    back = reverse("jobs_pages:failures") + "?" + urlencode({k: params[k] for k in ("range", "queue") if params[k]})
    if request.method == "POST":
        if not group.task_ids:
            messages.warning(request, "Nothing to retry in this group (every task of it was already re-run).")
            return HttpResponseRedirect(back)
        try:
            done = services.jobs_retry(task_ids=group.task_ids)
        except DomainError as exc:
            messages.error(request, f"Not retried: {exc.detail}")
            return HttpResponseRedirect(back)
        except PUBLISH_ERRORS as exc:
            messages.error(request, f"Not retried: the broker could not be reached ({type(exc).__name__}).")
            return HttpResponseRedirect(back)
        skipped = f"; {len(done.skipped)} skipped" if done.skipped else ""
        messages.success(
            request,
            f"{len(done.retried)} task{'s' if len(done.retried) != 1 else ''} of {group.exception_type or '(none)'} "
            f"in {group.name} published again{skipped}.",
        )
        for task_id, why in list(done.skipped.items())[:10]:
            messages.warning(request, f"Skipped {task_id}: {why}")
        return HttpResponseRedirect(back)
    return _render(
        request,
        page="retry_group",
        title="Retry a failure group?",
        context={"group": group, "params": params, "back_url": back},
        crumbs=[("Failures", back)],
        live=False,
    )


@jobs_view
def schedule(request: HttpRequest) -> HttpResponse:
    found = schedule_page(params=request.GET.dict())
    return _render(request, page="schedule", title="Schedule", context={"schedule": found}, crumbs=[])


def _schedule_back(request: HttpRequest) -> HttpResponseRedirect:
    kept = {"housekeeping": "0"} if request.POST.get("housekeeping") == "0" else {}
    return HttpResponseRedirect(reverse("jobs_pages:schedule") + (f"?{urlencode(kept)}" if kept else ""))


@jobs_view
@require_POST
def schedule_run(request: HttpRequest, name: str) -> HttpResponse:
    _require(request, RUN_PERIODIC_PERMISSION)
    try:
        new_id = services.periodic_run(name=name)
    except DomainError as exc:
        messages.error(request, f"Not run: {exc.detail}")
    except PUBLISH_ERRORS as exc:
        messages.error(request, f"Not run: the broker could not be reached ({type(exc).__name__}).")
    else:
        _remember_retry(request, new_id, "")
        messages.success(
            request, format_html('Sent {} now as task <a href="{}">{}</a>.', name, task_url(new_id), new_id)
        )
    return _schedule_back(request)


@jobs_view
@require_POST
def schedule_pause(request: HttpRequest, name: str) -> HttpResponse:
    return _schedule_enable(request, name, enabled=False)


@jobs_view
@require_POST
def schedule_resume(request: HttpRequest, name: str) -> HttpResponse:
    return _schedule_enable(request, name, enabled=True)


def _schedule_enable(request: HttpRequest, name: str, *, enabled: bool) -> HttpResponse:
    _require(request, PAUSE_PERIODIC_PERMISSION)
    try:
        (services.periodic_resume if enabled else services.periodic_pause)(name=name)
    except DomainError as exc:
        messages.error(request, f"Not {'resumed' if enabled else 'paused'}: {exc.detail}")
    else:
        done = (
            f"Resumed {name}: beat sends it again."
            if enabled
            else f"Paused {name}: beat does not send it until it is resumed."
        )
        messages.success(request, done)
    return _schedule_back(request)
