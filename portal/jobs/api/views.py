"""Job dashboard API: every Celery task the monitor recorded (filtered, keyset pages, detail with timeline and
relatives), retry and revoke, statistics, throughput, live queues and workers, failures grouped.

The periodic schedule (django-celery-beat's database schedule): every periodic task with its last and next run;
run one now, pause or resume one (people with ``jobs.run_periodic`` / ``jobs.pause_periodic``: operator, admin).

Reads: people with ``jobs.view_job`` (viewer and up), machine clients with ``jobs:read``. Writes: people with
``jobs.retry_job`` / ``jobs.revoke_job`` (operator, admin), machine clients with ``jobs:write``; every write is
audited by the service it calls.
"""

from __future__ import annotations

from typing import Any

import redis
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from kombu.exceptions import KombuError
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from portal.identity.permissions import RoleOrScope
from portal.jobs import errors, selectors, services
from portal.jobs.api import examples
from portal.jobs.api.serializers import (
    STATS_WINDOWS,
    BulkRetriedSerializer,
    BulkRetryInputSerializer,
    FailuresQuerySerializer,
    FailuresSerializer,
    JobDetailSerializer,
    JobPageSerializer,
    JobSummarySerializer,
    PageQuerySerializer,
    PeriodicEnabledSerializer,
    PeriodicListSerializer,
    PeriodicRunSerializer,
    QueuesSerializer,
    RetriedSerializer,
    RevokedSerializer,
    RevokeInputSerializer,
    ScheduleQuerySerializer,
    StatsQuerySerializer,
    StatsSerializer,
    ThroughputQuerySerializer,
    ThroughputSerializer,
    WorkerSerializer,
    WorkersSerializer,
)
from portal.jobs.filters import FailureFilterSet, TaskFilterSet, task_filters_parse
from portal.jobs.models import Job, Worker
from portal.jobs.selectors import TaskFilters, housekeeping_hidden
from services.kit.schema import api_operation

READ = {"*": {"jobs:read"}}
WRITE = {"*": {"jobs:write"}}

PERIODIC_NAME = OpenApiParameter(
    "name", OpenApiTypes.STR, OpenApiParameter.PATH, description="The periodic task's name (portal.ping.beat)."
)
TASK_ID = OpenApiParameter("task_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The Celery task id.")


class JobsRead:
    """People by role (``jobs.view_job``), machine clients with ``jobs:read``."""

    permission_classes = [RoleOrScope]
    required_scopes = READ
    queryset = Job.objects.none()


class JobsWrite:
    """People holding ``required_user_permissions``, machine clients with ``jobs:write``."""

    permission_classes = [RoleOrScope]
    required_scopes = WRITE
    queryset = Job.objects.none()


def _task_filters(request: Request, *, filterset: type[TaskFilterSet], page: serializers.Serializer) -> TaskFilters:
    """The filters and the page parameters, validated together: every bad parameter in one 400."""
    errors: dict[str, Any] = {}
    filters = TaskFilters()
    try:
        filters = task_filters_parse(request.query_params, filterset=filterset)
    except serializers.ValidationError as exc:
        errors.update(exc.detail)
    if not page.is_valid():
        errors.update(page.errors)
    if errors:
        raise serializers.ValidationError(errors)
    return filters


class TaskListView(JobsRead, generics.ListAPIView):
    """Tasks, newest first (by when they were first seen), filtered; keyset pages, stable under inserts."""

    serializer_class = JobSummarySerializer
    filterset_class = TaskFilterSet
    pagination_class = None

    @api_operation(
        summary="List background jobs",
        description="Celery tasks of every service, newest first, filtered by state, queue, service, name, "
        "worker, exception, time or `request_id` (the jobs published under a request, and the batch jobs that "
        "carried it: `linked: true`). Forward-only pages: follow `next`.",
        examples=[examples.page],
        parameters=[PageQuerySerializer],
        responses={200: JobPageSerializer},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = PageQuerySerializer(data=request.query_params)
        filters = _task_filters(request, filterset=TaskFilterSet, page=page)
        filters = housekeeping_hidden(filters, shown=page.validated_data["housekeeping"])
        found = selectors.jobs_page(
            selectors.jobs_filter(filters), cursor=page.validated_data.get("cursor"), limit=page.validated_data["limit"]
        )
        next_url = replace_query_param(request.build_absolute_uri(), "cursor", found.next) if found.next else None
        rows = JobSummarySerializer(found.rows, many=True).data
        return Response({"next": next_url, "previous": None, "results": rows})  # forward only (docs/jobs.md)


class TaskDetailView(JobsRead, APIView):
    """A task: its args (redacted), result or exception and traceback, timeline, and relatives."""

    @api_operation(
        summary="Get a background job",
        description="A task with its arguments (redacted), result or exception and traceback, its timeline, "
        "the tasks related to it and the requests and objects it carried.",
        errors=[errors.JobNotFound],
        examples=[examples.detail],
        parameters=[TASK_ID],
        responses={200: JobDetailSerializer},
    )
    def get(self, request: Request, task_id: str) -> Response:
        job = selectors.job_get(task_id)
        if job is None:
            raise errors.JobNotFound(f"No job {task_id!r} has been recorded.")
        context = {
            "timeline": selectors.job_timeline(job.task_id),
            "relatives": selectors.job_relatives(job),
            "carried": selectors.job_carried(job),
        }
        return Response(JobDetailSerializer(job, context=context).data)


class TaskRetryView(JobsWrite, APIView):
    """Publish a failed, revoked or rejected task again: same args, a new task id linked to it."""

    required_user_permissions = ["jobs.retry_job"]

    @api_operation(
        summary="Retry a background job",
        description="Publishes a failed, revoked or rejected task again with the same arguments, as a new task "
        "linked to the old one (202: the new task id).",
        errors=[errors.JobNotFound, errors.JobNotRetryable],
        examples=[examples.retried],
        operation_id="jobs_task_retry",
        parameters=[TASK_ID],
        request=None,
        responses={202: RetriedSerializer},
    )
    def post(self, request: Request, task_id: str) -> Response:
        new_id = services.job_retry(task_id=task_id)
        return Response({"task_id": new_id, "retry_of": task_id}, status=status.HTTP_202_ACCEPTED)


class TaskRevokeView(JobsWrite, APIView):
    """Revoke a task that has not ended: workers discard it; ``terminate`` also stops it if it is running."""

    required_user_permissions = ["jobs.revoke_job"]

    @api_operation(
        summary="Revoke a background job",
        description="Tells the workers to discard a task that has not ended; with `terminate`, also to stop it "
        "if it is running.",
        errors=[errors.JobNotFound, errors.JobNotRevocable],
        examples=[examples.revoke, examples.revoked],
        operation_id="jobs_task_revoke",
        parameters=[TASK_ID],
        request=RevokeInputSerializer,
        responses={202: RevokedSerializer},
    )
    def post(self, request: Request, task_id: str) -> Response:
        body = RevokeInputSerializer(data=request.data if request.data else {})
        body.is_valid(raise_exception=True)
        terminate = body.validated_data["terminate"]
        services.job_revoke(task_id=task_id, terminate=terminate)
        return Response({"task_id": task_id, "terminate": terminate}, status=status.HTTP_202_ACCEPTED)


class TasksRetryView(JobsWrite, APIView):
    """Retry the failed tasks the filters select (at least one besides state; at most ``JOBS_RETRY_MAX``)."""

    required_user_permissions = ["jobs.retry_job"]

    @api_operation(
        summary="Retry failed jobs in bulk",
        description="Retries every failed task the filters select: at least one filter besides `state`, and at "
        "most a bounded number of tasks (409 `too_many_jobs` above it).",
        errors=[errors.FilterRequired, errors.TooManyJobs],
        examples=[examples.bulk_retry, examples.bulk_retried],
        operation_id="jobs_tasks_retry_bulk",
        request=BulkRetryInputSerializer,
        responses={202: BulkRetriedSerializer},
    )
    def post(self, request: Request) -> Response:
        body = BulkRetryInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        done = services.jobs_retry_matching(filters=TaskFilters(**body.validated_data))
        return Response({"retried": done.retried, "skipped": done.skipped}, status=status.HTTP_202_ACCEPTED)


class FailureListView(JobsRead, generics.ListAPIView):
    """Failed tasks grouped by exception type and task name, the largest groups first."""

    serializer_class = FailuresSerializer
    filterset_class = FailureFilterSet
    pagination_class = None

    @api_operation(
        summary="Group job failures",
        description="What is failing: failed tasks counted by exception type and task name, the largest groups "
        "first, each with its latest task to open.",
        examples=[examples.failures],
        parameters=[FailuresQuerySerializer],
        responses={200: FailuresSerializer},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        query = FailuresQuerySerializer(data=request.query_params)
        filters = _task_filters(request, filterset=FailureFilterSet, page=query)
        groups = selectors.failures_grouped(filters, limit=query.validated_data["limit"])
        return Response(FailuresSerializer({"results": groups}).data)


class StatsView(JobsRead, APIView):
    """Per queue (or task name): tasks first seen in the window by state now, and p50/p95 runtime."""

    @api_operation(
        summary="Job statistics",
        description="Per queue (or task name), the tasks first seen in the window by their state now, and their "
        "median and 95th percentile runtimes.",
        examples=[examples.stats],
        parameters=[StatsQuerySerializer],
        responses={200: StatsSerializer},
    )
    def get(self, request: Request) -> Response:
        query = StatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        window, group_by = query.validated_data["window"], query.validated_data["group_by"]
        since = timezone.now() - STATS_WINDOWS[window]
        rows = [{**row, "key": row[group_by]} for row in selectors.task_stats(since=since, group_by=group_by)]
        body = {"window": window, "group_by": group_by, "since": since, "results": rows}
        return Response(StatsSerializer(body).data)


class ThroughputView(JobsRead, APIView):
    """Per time bucket and queue: tasks queued, started, succeeded, failed and retried (from per-minute counts,
    kept longer than the tasks themselves)."""

    @api_operation(
        summary="Job throughput",
        description="How much work went through: for each time bucket and queue, the tasks queued, started, "
        "succeeded, failed and retried.",
        examples=[examples.throughput],
        parameters=[ThroughputQuerySerializer],
        responses={200: ThroughputSerializer},
    )
    def get(self, request: Request) -> Response:
        query = ThroughputQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        window = query.validated_data
        buckets = selectors.throughput(
            since=window["since"], until=window["until"], bucket_minutes=window["bucket_minutes"], queue=window["queue"]
        )
        body = {
            "since": window["since"],
            "until": window["until"],
            "bucket_minutes": window["bucket_minutes"],
            "results": buckets,
        }
        return Response(ThroughputSerializer(body).data)


class QueueListView(JobsRead, APIView):
    """Every queue's depth and the age of its oldest message, read from the broker now."""

    @api_operation(
        summary="List queues",
        description="How many messages wait in each queue and how old the oldest is, as the broker says now: a "
        "backlog shows here first.",
        errors=[errors.BrokerUnavailable],
        examples=[examples.queues],
        responses={200: QueuesSerializer},
    )
    def get(self, request: Request) -> Response:
        try:
            queues = selectors.queues_live()
        except (redis.RedisError, OSError) as exc:
            raise errors.BrokerUnavailable(f"Reading the queues failed: {type(exc).__name__}.") from exc
        return Response(QueuesSerializer({"results": queues}).data)


class WorkerListView(JobsRead, APIView):
    """Every worker seen: liveness (online, offline, lost), pool, load, and its in-flight tasks."""

    queryset = Worker.objects.none()

    @api_operation(
        summary="List workers",
        description="Every Celery worker seen: online, offline or lost, its pool, load and in-flight tasks.",
        examples=[examples.workers],
        responses={200: WorkersSerializer},
    )
    def get(self, request: Request) -> Response:
        rows = selectors.workers_list()
        in_flight = {row["worker"].hostname: [job.task_id for job in row["in_flight"]] for row in rows}
        workers = WorkerSerializer([row["worker"] for row in rows], many=True, context={"in_flight": in_flight})
        return Response({"results": workers.data})


class ScheduleListView(JobsRead, APIView):
    """Every periodic task: its schedule in words, queue, paused or not, last run (the job it sent) and next run."""

    @api_operation(
        summary="List the periodic schedule",
        description="Every periodic task beat sends: its schedule in words, queue, whether it is paused or "
        "housekeeping, its last run (the job it sent, with its outcome) and its next run. "
        "`housekeeping=false` leaves out maintenance tasks.",
        examples=[examples.schedule],
        parameters=[ScheduleQuerySerializer],
        responses={200: PeriodicListSerializer},
    )
    def get(self, request: Request) -> Response:
        query = ScheduleQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.schedule_list(housekeeping=query.validated_data["housekeeping"])
        return Response(PeriodicListSerializer({"results": rows}).data)


class PeriodicRunView(JobsWrite, APIView):
    """Send a periodic task now, as beat would (paused or not); its schedule does not change. Audited."""

    required_user_permissions = ["jobs.run_periodic"]

    @api_operation(
        summary="Run a periodic task now",
        description="Sends the periodic task now, as beat would, paused or not; its schedule does not change "
        "(202: the task sent). Audited.",
        errors=[errors.PeriodicTaskNotFound, errors.BrokerUnavailable],
        examples=[examples.periodic_run],
        operation_id="jobs_schedule_run",
        parameters=[PERIODIC_NAME],
        request=None,
        responses={202: PeriodicRunSerializer},
    )
    def post(self, request: Request, name: str) -> Response:
        try:
            task_id = services.periodic_run(name=name)
        except (redis.RedisError, OSError, KombuError) as exc:
            raise errors.BrokerUnavailable(f"Sending the task failed: {type(exc).__name__}.") from exc
        return Response({"task_id": task_id, "periodic": name}, status=status.HTTP_202_ACCEPTED)


class PeriodicPauseView(JobsWrite, APIView):
    """Pause a periodic task: beat stops sending it (within 5 s) until it is resumed. Audited."""

    required_user_permissions = ["jobs.pause_periodic"]

    @api_operation(
        summary="Pause a periodic task",
        description="Beat stops sending the task (within 5 s) until it is resumed. Audited.",
        errors=[errors.PeriodicTaskNotFound, errors.PeriodicTaskPaused],
        examples=[examples.periodic_paused],
        operation_id="jobs_schedule_pause",
        parameters=[PERIODIC_NAME],
        request=None,
        responses={200: PeriodicEnabledSerializer},
    )
    def post(self, request: Request, name: str) -> Response:
        services.periodic_pause(name=name)
        return Response({"name": name, "enabled": False})


class PeriodicResumeView(JobsWrite, APIView):
    """Resume a paused periodic task: beat sends it again, one period after now. Audited."""

    required_user_permissions = ["jobs.pause_periodic"]

    @api_operation(
        summary="Resume a periodic task",
        description="Beat sends the paused task again, one period after now. Audited.",
        errors=[errors.PeriodicTaskNotFound, errors.PeriodicTaskNotPaused],
        examples=[examples.periodic_resumed],
        operation_id="jobs_schedule_resume",
        parameters=[PERIODIC_NAME],
        request=None,
        responses={200: PeriodicEnabledSerializer},
    )
    def post(self, request: Request, name: str) -> Response:
        services.periodic_resume(name=name)
        return Response({"name": name, "enabled": True})
