"""Job dashboard errors (RFC 9457 problems with stable codes)."""

from __future__ import annotations

from rest_framework import status

from services.kit.errors import Conflict, DomainError, NotFound


class JobNotFound(NotFound):
    code = "job_not_found"
    title = "No such job"


class JobNotRetryable(Conflict):
    code = "job_not_retryable"
    title = "This job cannot be retried"


class JobNotRevocable(Conflict):
    code = "job_not_revocable"
    title = "This job cannot be revoked"


class TooManyJobs(Conflict):
    code = "too_many_jobs"
    title = "Too many jobs in one action"


class FilterRequired(DomainError):
    code = "filter_required"
    title = "A filter is required"


class BrokerUnavailable(DomainError):
    code = "broker_unavailable"
    status = status.HTTP_503_SERVICE_UNAVAILABLE
    title = "The broker did not answer"


class PeriodicTaskNotFound(NotFound):
    code = "periodic_task_not_found"
    title = "No such periodic task"


class PeriodicTaskPaused(Conflict):
    code = "periodic_task_paused"
    title = "This periodic task is already paused"


class PeriodicTaskNotPaused(Conflict):
    code = "periodic_task_not_paused"
    title = "This periodic task is not paused"
