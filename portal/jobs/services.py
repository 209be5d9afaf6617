"""Operator actions on jobs: retry a failed task (one, or a bounded selection), revoke a queued or running one;
and on the periodic schedule: sync the code's schedule into the database (beat's start-up), run a periodic task
now, pause or resume it.

Every action is audited (in the same transaction as nothing else: the outbox row is the record) with the person or
client acting. A retry publishes the task again with the same args — the raw ones the tracking kept for it, never
the redacted ones shown — under a new task id, linked to the original (``retry_of``); a task whose args were too
large to keep cannot be retried from here (``409 job_not_retryable``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from celery.schedules import maybe_schedule
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from portal.jobs.errors import (
    FilterRequired,
    JobNotFound,
    JobNotRetryable,
    JobNotRevocable,
    PeriodicTaskNotFound,
    PeriodicTaskNotPaused,
    PeriodicTaskPaused,
    TooManyJobs,
)
from portal.jobs.models import FINAL_STATES, Job, JobState, PeriodicDefault
from portal.jobs.selectors import TaskFilters, jobs_filter, periodic_definition, schedule_definition
from services.kit.audit import audit_record
from services.kit.logs import get_logger

log = get_logger(__name__)

RETRYABLE_STATES = (JobState.FAILED, JobState.REVOKED, JobState.REJECTED)


def _job(task_id: str) -> Job:
    job = Job.objects.filter(task_id=task_id).first()
    if job is None:
        raise JobNotFound(f"No job {task_id!r} has been recorded.")
    return job


def _retry_check(job: Job) -> None:
    if job.state not in RETRYABLE_STATES:
        raise JobNotRetryable(f"Job {job.task_id} is {job.state}; only failed, revoked or rejected jobs are retried.")
    if job.payload is None:
        raise JobNotRetryable(f"Job {job.task_id}'s args were too large to keep (or were never seen): run it anew.")


def _publish(job: Job) -> str:
    from services.kit.celery_app import app
    from services.kit.queues import QUEUES

    new_id = str(uuid.uuid4())
    payload = job.payload or {}
    app.send_task(
        job.name,
        args=payload.get("args", []),
        kwargs=payload.get("kwargs", {}),
        task_id=new_id,
        # A queue the app does not declare would be refused (task_create_missing_queues is off): route by name.
        queue=job.queue if job.queue in QUEUES else None,
        headers={"atrium_retry_of": job.task_id},
    )
    return new_id


def job_retry(*, task_id: str) -> str:
    """Publish ``task_id`` again (same args, a new task id linked to it); return the new id."""
    job = _job(task_id)
    _retry_check(job)
    new_id = _publish(job)
    with transaction.atomic():
        audit_record(
            "jobs.task.retried",
            object_type="jobs.task",
            object_id=job.task_id,
            metadata={"name": job.name, "queue": job.queue, "new_task_id": new_id},
        )
    log.info("jobs.retried", task_id=job.task_id, new_task_id=new_id, name=job.name)
    return new_id


@dataclass
class BulkRetry:
    retried: dict[str, str]  # original task id → new task id
    skipped: dict[str, str]  # task id → why not


def retry_max() -> int:
    """How many jobs one bulk retry may publish (``JOBS_RETRY_MAX``, 500)."""
    return int(getattr(settings, "JOBS_RETRY_MAX", 500))


def jobs_retry(*, task_ids: list[str], selection: dict[str, str] | None = None) -> BulkRetry:
    """Retry each of ``task_ids`` (at most ``JOBS_RETRY_MAX``, 500, or none at all): one audit event for the
    action, naming every task (and ``selection``, the filters that chose them, when given)."""
    limit = retry_max()
    if len(task_ids) > limit:
        raise TooManyJobs(f"{len(task_ids)} jobs selected; retry at most {limit} at once (narrow the filter).")
    jobs = {j.task_id: j for j in Job.objects.filter(task_id__in=task_ids)}
    result = BulkRetry({}, {})
    for task_id in dict.fromkeys(task_ids):
        job = jobs.get(task_id)
        if job is None:
            result.skipped[task_id] = "not found"
            continue
        try:
            _retry_check(job)
        except JobNotRetryable as exc:
            result.skipped[task_id] = str(exc)
            continue
        result.retried[task_id] = _publish(job)
    with transaction.atomic():
        audit_record(
            "jobs.tasks.retried",
            object_type="jobs.task",
            object_id=f"{len(result.retried)} tasks",
            metadata={
                "retried": result.retried,
                "skipped": sorted(result.skipped),
                **({"selection": selection} if selection is not None else {}),
            },
        )
    log.info("jobs.bulk_retried", retried=len(result.retried), skipped=len(result.skipped))
    return result


def jobs_retry_matching(*, filters: TaskFilters) -> BulkRetry:
    """Retry the failed jobs ``filters`` select (whatever state they name: only failed ones are retried in bulk);
    at least one filter is required, and at most ``JOBS_RETRY_MAX`` jobs may match."""
    filters = replace(filters, state=JobState.FAILED)
    selection = filters.as_query()
    if not set(selection) - {"state"}:
        raise FilterRequired("Narrow the selection with at least one filter besides the state.")
    limit = retry_max()
    task_ids = list(jobs_filter(filters).values_list("task_id", flat=True)[: limit + 1])
    if len(task_ids) > limit:
        raise TooManyJobs(f"More than {limit} failed jobs match; retry at most {limit} at once (narrow the filter).")
    return jobs_retry(task_ids=task_ids, selection=selection)


def job_revoke(*, task_id: str, terminate: bool = False) -> None:
    """Revoke a job that has not finished: workers discard it when it arrives; with ``terminate``, the process
    running it is sent SIGTERM."""
    job = _job(task_id)
    if job.state in FINAL_STATES:
        raise JobNotRevocable(f"Job {job.task_id} already ended ({job.state}).")
    from services.kit.celery_app import app

    app.control.revoke(job.task_id, terminate=terminate, signal="SIGTERM")
    with transaction.atomic():
        audit_record(
            "jobs.task.revoked",
            object_type="jobs.task",
            object_id=job.task_id,
            metadata={"name": job.name, "queue": job.queue, "state": job.state, "terminate": terminate},
        )
    log.info("jobs.revoked", task_id=job.task_id, terminate=terminate)


# --- the periodic schedule (django-celery-beat's database schedule) --------------------------------------------


@dataclass
class ScheduleSync:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # an operator changed it in the admin: left as it is
    removed: list[str] = field(default_factory=list)


def _code_definition(entry: Mapping[str, Any]) -> dict[str, Any]:
    options = entry.get("options") or {}
    return {
        "task": entry["task"],
        "schedule": schedule_definition(maybe_schedule(entry["schedule"])),
        "args": list(entry.get("args") or []),
        "kwargs": dict(entry.get("kwargs") or {}),
        "queue": options.get("queue") or None,
    }


def _periodic_set(task: PeriodicTask, entry: Mapping[str, Any], definition: dict[str, Any]) -> None:
    model_schedule, model_field = ModelEntry.to_model_schedule(maybe_schedule(entry["schedule"]))
    for kind in ("interval", "crontab", "solar", "clocked"):
        setattr(task, kind, model_schedule if kind == model_field else None)
    task.task = definition["task"]
    task.args = json.dumps(definition["args"])
    task.kwargs = json.dumps(definition["kwargs"])
    task.queue = definition["queue"]


def schedule_sync(*, entries: Mapping[str, Mapping[str, Any]]) -> ScheduleSync:
    """Bring the code's beat schedule (``workers/beat.py``: name → ``task``, ``schedule``, ``args``, ``kwargs``,
    ``options``) into the database schedule, idempotently. A task the code adds is created (enabled); a task the
    code changes is updated, unless an operator changed it in the admin since the last sync (kept); a task the
    code no longer defines is deleted, unless an operator changed it. ``enabled`` is never written on a task that
    exists: a pause survives every sync."""
    done = ScheduleSync()
    now = timezone.now()
    with transaction.atomic():
        defaults = {d.name: d for d in PeriodicDefault.objects.select_for_update()}
        rows = {
            t.name: t
            for t in PeriodicTask.objects.select_for_update(of=("self",))
            .select_related("interval", "crontab", "solar", "clocked")
            .filter(name__in=[*entries, *defaults])
        }
        for name, entry in entries.items():
            wanted = _code_definition(entry)
            row, last = rows.get(name), defaults.get(name)
            if row is None:
                row = PeriodicTask(name=name, enabled=True, description="Defined in workers/beat.py.")
                _periodic_set(row, entry, wanted)
                row.save()
                done.created.append(name)
            elif last is not None and periodic_definition(row) != last.definition:
                done.kept.append(name)
            elif periodic_definition(row) != wanted:
                _periodic_set(row, entry, wanted)
                row.save()
                done.updated.append(name)
            PeriodicDefault.objects.update_or_create(name=name, defaults={"definition": wanted, "synced_at": now})
        for name in defaults.keys() - entries.keys():
            row = rows.get(name)
            if row is not None and periodic_definition(row) == defaults[name].definition:
                row.delete()
                done.removed.append(name)
            defaults[name].delete()
    if done.created or done.updated or done.kept or done.removed:
        log.info("jobs.schedule_synced", **{f"tasks_{k}": sorted(v) for k, v in done.__dict__.items()})
    return done


def _periodic(name: str, *, lock: bool = False) -> PeriodicTask:
    qs = PeriodicTask.objects.select_for_update() if lock else PeriodicTask.objects.all()
    task = qs.filter(name=name).first()
    if task is None:
        raise PeriodicTaskNotFound(f"No periodic task {name!r} is scheduled.")
    return task


def periodic_run(*, name: str) -> str:
    """Send the periodic task ``name`` now, as beat would (its args, queue and headers), whether or not it is
    paused; the schedule is not changed. Return the new task id."""
    from services.kit.celery_app import app
    from services.kit.queues import QUEUES

    task = _periodic(name)
    new_id = str(uuid.uuid4())
    headers = {**json.loads(task.headers or "{}"), "periodic_task_name": task.name}
    app.send_task(
        task.task,
        args=json.loads(task.args or "[]"),
        kwargs=json.loads(task.kwargs or "{}"),
        task_id=new_id,
        queue=task.queue if task.queue in QUEUES else None,
        headers=headers,
    )
    with transaction.atomic():
        audit_record(
            "jobs.periodic.run",
            object_type="jobs.periodic",
            object_id=task.name,
            metadata={"task": task.task, "new_task_id": new_id, "enabled": task.enabled},
        )
    log.info("jobs.periodic_run", periodic=task.name, task_id=new_id)
    return new_id


def periodic_pause(*, name: str) -> None:
    """Stop beat sending ``name`` (it reads the change within ``beat_max_loop_interval``, 5 s) until resumed."""
    _periodic_enable(name=name, enabled=False)


def periodic_resume(*, name: str) -> None:
    """Let beat send ``name`` again; its next run is one period after the resume."""
    _periodic_enable(name=name, enabled=True)


def _periodic_enable(*, name: str, enabled: bool) -> None:
    with transaction.atomic():
        task = _periodic(name, lock=True)
        if task.enabled == enabled:
            error = PeriodicTaskNotPaused if enabled else PeriodicTaskPaused
            raise error(f"Periodic task {name!r} is {'already running' if enabled else 'already paused'}.")
        task.enabled = enabled
        task.save()  # django-celery-beat's save marks the schedule changed: beat reloads it
        audit_record(
            "jobs.periodic.resumed" if enabled else "jobs.periodic.paused",
            object_type="jobs.periodic",
            object_id=task.name,
            metadata={"task": task.task},
        )
    log.info("jobs.periodic_resumed" if enabled else "jobs.periodic_paused", periodic=name)
