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
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from kombu.exceptions import KombuError
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from portal.identity.permissions import RoleOrScope
from portal.jobs import selectors, services
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
from portal.jobs.errors import BrokerUnavailable, JobNotFound
from portal.jobs.filters import FailureFilterSet, TaskFilterSet, task_filters_parse
from portal.jobs.models import Job, Worker
from portal.jobs.selectors import TaskFilters, housekeeping_hidden
from services.kit.serializers import ProblemSerializer

READ = {"*": {"jobs:read"}}
WRITE = {"*": {"jobs:write"}}

PROBLEM = "application/problem+json"
BAD_REQUEST = {
    (400, PROBLEM): OpenApiResponse(ProblemSerializer, description="validation_error: one entry per bad parameter")
}
BAD_PAGE = {
    (400, PROBLEM): OpenApiResponse(
        ProblemSerializer, description="validation_error (one entry per bad parameter) or invalid_cursor"
    )
}
PERIODIC_NOT_FOUND = {(404, PROBLEM): OpenApiResponse(ProblemSerializer, description="periodic_task_not_found")}
PERIODIC_NAME = OpenApiParameter(
    "name", OpenApiTypes.STR, OpenApiParameter.PATH, description="The periodic task's name (portal.ping.beat)."
)
NOT_FOUND = {(404, PROBLEM): OpenApiResponse(ProblemSerializer, description="job_not_found")}
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

    @extend_schema(parameters=[PageQuerySerializer], responses={200: JobPageSerializer, **BAD_PAGE})
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

    @extend_schema(parameters=[TASK_ID], responses={200: JobDetailSerializer, **NOT_FOUND})
    def get(self, request: Request, task_id: str) -> Response:
        job = selectors.job_get(task_id)
        if job is None:
            raise JobNotFound(f"No job {task_id!r} has been recorded.")
        context = {
            "timeline": selectors.job_timeline(job.task_id),
            "relatives": selectors.job_relatives(job),
            "carried": selectors.job_carried(job),
        }
        return Response(JobDetailSerializer(job, context=context).data)


class TaskRetryView(JobsWrite, APIView):
    """Publish a failed, revoked or rejected task again: same args, a new task id linked to it."""

    required_user_permissions = ["jobs.retry_job"]

    @extend_schema(
        operation_id="jobs_task_retry",
        parameters=[TASK_ID],
        request=None,
        responses={
            202: RetriedSerializer,
            **NOT_FOUND,
            (409, PROBLEM): OpenApiResponse(ProblemSerializer, description="job_not_retryable"),
        },
    )
    def post(self, request: Request, task_id: str) -> Response:
        new_id = services.job_retry(task_id=task_id)
        return Response({"task_id": new_id, "retry_of": task_id}, status=status.HTTP_202_ACCEPTED)


class TaskRevokeView(JobsWrite, APIView):
    """Revoke a task that has not ended: workers discard it; ``terminate`` also stops it if it is running."""

    required_user_permissions = ["jobs.revoke_job"]

    @extend_schema(
        operation_id="jobs_task_revoke",
        parameters=[TASK_ID],
        request=RevokeInputSerializer,
        responses={
            202: RevokedSerializer,
            **BAD_REQUEST,
            **NOT_FOUND,
            (409, PROBLEM): OpenApiResponse(ProblemSerializer, description="job_not_revocable"),
        },
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

    @extend_schema(
        operation_id="jobs_tasks_retry_bulk",
        request=BulkRetryInputSerializer,
        responses={
            202: BulkRetriedSerializer,
            (400, PROBLEM): OpenApiResponse(ProblemSerializer, description="validation_error or filter_required"),
            (409, PROBLEM): OpenApiResponse(ProblemSerializer, description="too_many_jobs"),
        },
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

    @extend_schema(parameters=[FailuresQuerySerializer], responses={200: FailuresSerializer, **BAD_REQUEST})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        query = FailuresQuerySerializer(data=request.query_params)
        filters = _task_filters(request, filterset=FailureFilterSet, page=query)
        groups = selectors.failures_grouped(filters, limit=query.validated_data["limit"])
        return Response(FailuresSerializer({"results": groups}).data)


class StatsView(JobsRead, APIView):
    """Per queue (or task name): tasks first seen in the window by state now, and p50/p95 runtime."""

    @extend_schema(parameters=[StatsQuerySerializer], responses={200: StatsSerializer, **BAD_REQUEST})
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

    @extend_schema(parameters=[ThroughputQuerySerializer], responses={200: ThroughputSerializer, **BAD_REQUEST})
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

    @extend_schema(
        responses={
            200: QueuesSerializer,
            (503, PROBLEM): OpenApiResponse(ProblemSerializer, description="broker_unavailable"),
        }
    )
    def get(self, request: Request) -> Response:
        try:
            queues = selectors.queues_live()
        except (redis.RedisError, OSError) as exc:
            raise BrokerUnavailable(f"Reading the queues failed: {type(exc).__name__}.") from exc
        return Response(QueuesSerializer({"results": queues}).data)


class WorkerListView(JobsRead, APIView):
    """Every worker seen: liveness (online, offline, lost), pool, load, and its in-flight tasks."""

    queryset = Worker.objects.none()

    @extend_schema(responses={200: WorkersSerializer})
    def get(self, request: Request) -> Response:
        rows = selectors.workers_list()
        in_flight = {row["worker"].hostname: [job.task_id for job in row["in_flight"]] for row in rows}
        workers = WorkerSerializer([row["worker"] for row in rows], many=True, context={"in_flight": in_flight})
        return Response({"results": workers.data})


class ScheduleListView(JobsRead, APIView):
    """Every periodic task: its schedule in words, queue, paused or not, last run (the job it sent) and next run."""

    @extend_schema(parameters=[ScheduleQuerySerializer], responses={200: PeriodicListSerializer, **BAD_REQUEST})
    def get(self, request: Request) -> Response:
        query = ScheduleQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.schedule_list(housekeeping=query.validated_data["housekeeping"])
        return Response(PeriodicListSerializer({"results": rows}).data)


class PeriodicRunView(JobsWrite, APIView):
    """Send a periodic task now, as beat would (paused or not); its schedule does not change. Audited."""

    required_user_permissions = ["jobs.run_periodic"]

    @extend_schema(
        operation_id="jobs_schedule_run",
        parameters=[PERIODIC_NAME],
        request=None,
        responses={
            202: PeriodicRunSerializer,
            **PERIODIC_NOT_FOUND,
            (503, PROBLEM): OpenApiResponse(ProblemSerializer, description="broker_unavailable"),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        try:
            task_id = services.periodic_run(name=name)
        except (redis.RedisError, OSError, KombuError) as exc:
            raise BrokerUnavailable(f"Sending the task failed: {type(exc).__name__}.") from exc
        return Response({"task_id": task_id, "periodic": name}, status=status.HTTP_202_ACCEPTED)


class PeriodicPauseView(JobsWrite, APIView):
    """Pause a periodic task: beat stops sending it (within 5 s) until it is resumed. Audited."""

    required_user_permissions = ["jobs.pause_periodic"]

    @extend_schema(
        operation_id="jobs_schedule_pause",
        parameters=[PERIODIC_NAME],
        request=None,
        responses={
            200: PeriodicEnabledSerializer,
            **PERIODIC_NOT_FOUND,
            (409, PROBLEM): OpenApiResponse(ProblemSerializer, description="periodic_task_paused"),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        services.periodic_pause(name=name)
        return Response({"name": name, "enabled": False})


class PeriodicResumeView(JobsWrite, APIView):
    """Resume a paused periodic task: beat sends it again, one period after now. Audited."""

    required_user_permissions = ["jobs.pause_periodic"]

    @extend_schema(
        operation_id="jobs_schedule_resume",
        parameters=[PERIODIC_NAME],
        request=None,
        responses={
            200: PeriodicEnabledSerializer,
            **PERIODIC_NOT_FOUND,
            (409, PROBLEM): OpenApiResponse(ProblemSerializer, description="periodic_task_not_paused"),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        services.periodic_resume(name=name)
        return Response({"name": name, "enabled": True})
