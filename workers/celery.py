"""The Celery application shared by every Atrium worker and beat."""

from __future__ import annotations

import logging.config
import os
from typing import Any

from celery import Celery, signals

from workers.beat import BEAT_SCHEDULE, QUIET_TASKS
from workers.routing import TASK_QUEUES, route_task

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("atrium", task_cls="workers.base:AtriumTask")
# Tunables (broker URL, time limits, imports) come from the process's Django settings.
app.config_from_object("django.conf:settings", namespace="CELERY")
# Policy that no environment may change: JSON only, late acks, explicit queues.
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_queues=TASK_QUEUES,
    task_default_queue="portal",
    task_default_exchange="portal",
    task_default_routing_key="portal",
    task_routes=(route_task,),
    task_create_missing_queues=False,
    task_track_started=True,
    task_send_sent_event=True,
    worker_send_task_events=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    enable_utc=True,
    timezone="UTC",
    beat_schedule=BEAT_SCHEDULE,
    # Celery's Django fixup closes every database connection after every task unless this is set: a new
    # PostgreSQL connection (a forked backend) per task. It is set, so connections are kept; the handler below
    # treats each task as Django treats a request (a broken connection, or one older than CONN_MAX_AGE, is
    # closed; the next use health-checks it). The fixup still closes them all every this many tasks.
    CELERY_DB_REUSE_MAX=1000,
)


@signals.task_prerun.connect
@signals.task_postrun.connect
def _database_connections_checked(task: Any = None, **kwargs: Any) -> None:
    """Before and after each task, as Django does before and after each request (not for a task run eagerly in
    the caller's process: its connection, maybe inside the caller's transaction, is the caller's)."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@signals.worker_ready.connect
def _catalog_register_worker(sender: Any = None, **kwargs: Any) -> None:
    """A worker registers in the service catalog and heartbeats (a background thread; see
    services/kit/catalog.py)."""
    from services.kit.catalog import worker_agent_start

    queues = [q.name for q in sender.task_consumer.queues] if sender is not None else []
    worker_agent_start(queues or ["celery"])


@signals.beat_init.connect
def _catalog_register_beat(**kwargs: Any) -> None:
    from services.kit.catalog import beat_agent_start

    beat_agent_start()


@signals.worker_shutdown.connect
def _catalog_agent_stop(**kwargs: Any) -> None:
    from services.kit.catalog import agent_stop

    agent_stop()


@signals.setup_logging.connect
def _use_django_logging(**kwargs: Any) -> None:
    """Workers log JSON lines through the same LOGGING config as the web processes; Celery's lines about the
    frequent periodic tasks are DEBUG (an idle system stays quiet)."""
    from django.conf import settings

    from services.kit.logs import QuietTasks

    logging.config.dictConfig(settings.LOGGING)
    quiet = QuietTasks(QUIET_TASKS)
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)


@signals.before_task_publish.connect
def _propagate_request_id(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Stamp every published task with the current request id (web request or parent task)."""
    from services.kit.context import request_id_var

    if headers is not None and not headers.get("request_id"):
        request_id = request_id_var.get()
        if request_id:
            headers["request_id"] = request_id


# Every task's life cycle into the tracking stream the job monitor reads (signal handlers connect on import).
import workers.tracking  # noqa: E402, F401
