"""``/api/v1/jobs/...``"""

from django.urls import path, re_path

from portal.jobs.api.views import (
    FailureListView,
    PeriodicPauseView,
    PeriodicResumeView,
    PeriodicRunView,
    QueueListView,
    ScheduleListView,
    StatsView,
    TaskDetailView,
    TaskListView,
    TaskRetryView,
    TaskRevokeView,
    TasksRetryView,
    ThroughputView,
    WorkerListView,
)
from services.kit.canonical_urls import id_segment

urlpatterns = [
    path("tasks", TaskListView.as_view(), name="jobs-tasks"),
    path("tasks/retry", TasksRetryView.as_view(), name="jobs-tasks-retry"),
    re_path(rf"^tasks/(?P<task_id>{id_segment('retry')})$", TaskDetailView.as_view(), name="jobs-task"),
    path("tasks/<str:task_id>/retry", TaskRetryView.as_view(), name="jobs-task-retry"),
    path("tasks/<str:task_id>/revoke", TaskRevokeView.as_view(), name="jobs-task-revoke"),
    path("failures", FailureListView.as_view(), name="jobs-failures"),
    path("stats", StatsView.as_view(), name="jobs-stats"),
    path("throughput", ThroughputView.as_view(), name="jobs-throughput"),
    path("queues", QueueListView.as_view(), name="jobs-queues"),
    path("workers", WorkerListView.as_view(), name="jobs-workers"),
    path("schedule", ScheduleListView.as_view(), name="jobs-schedule"),
    path("schedule/<str:name>/run", PeriodicRunView.as_view(), name="jobs-schedule-run"),
    path("schedule/<str:name>/pause", PeriodicPauseView.as_view(), name="jobs-schedule-pause"),
    path("schedule/<str:name>/resume", PeriodicResumeView.as_view(), name="jobs-schedule-resume"),
]
