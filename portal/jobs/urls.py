"""The job dashboard's pages, inside the admin: ``/admin/jobs/`` (overview), ``/admin/jobs/tasks/``,
``/admin/jobs/tasks/<task_id>/`` (and its retry and revoke actions), ``/admin/jobs/failures/``,
``/admin/jobs/schedule/`` (and its run, pause and resume actions) (included before
``admin.site.urls``; the admin's own job pages stay at ``/admin/jobs/job/...`` and ``/admin/jobs/worker/...``)."""

from django.urls import path

from portal.jobs import views

app_name = "jobs_pages"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("tasks/", views.tasks, name="tasks"),
    path("tasks/<str:task_id>/", views.task, name="task"),
    path("tasks/<str:task_id>/retry/", views.task_retry, name="task_retry"),
    path("tasks/<str:task_id>/revoke/", views.task_revoke, name="task_revoke"),
    path("failures/", views.failures, name="failures"),
    path("failures/retry/", views.failures_retry, name="failures_retry"),
    path("schedule/", views.schedule, name="schedule"),
    path("schedule/<str:name>/run/", views.schedule_run, name="schedule_run"),
    path("schedule/<str:name>/pause/", views.schedule_pause, name="schedule_pause"),
    path("schedule/<str:name>/resume/", views.schedule_resume, name="schedule_resume"),
]
