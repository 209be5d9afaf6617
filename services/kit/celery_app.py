"""The one Celery app of every Atrium process: web processes send tasks through it, workers and beat run it.

The kit's ``AppConfig.ready()`` imports this module, so any process with Django set up has it as the default
(and current) app: a task sent from a request, the outbox relay or a worker goes through the same routing
(``services.kit.queues``), carries the request id and is tracked (``services.kit.tracking``). Tasks are sent by
name, so nothing here (nor any app) imports ``workers/``; ``workers/celery.py`` adds what only workers and beat
need (the beat schedule) and the task modules register on this app.
"""

from __future__ import annotations

import logging.config
from typing import Any

from celery import Celery, signals

from services.kit.logs import QuietTasks
from services.kit.queues import TASK_QUEUES, route_task

app = Celery("atrium", task_cls="services.kit.task_base:AtriumTask")
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
    """Workers log through the same LOGGING config as the web processes; Celery's lines about the tasks named in
    ``app.conf.atrium_quiet_tasks`` (beat's frequent ones, set by ``workers/celery.py``) are DEBUG, so an idle
    system stays quiet."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    quiet = QuietTasks(tuple(app.conf.get("atrium_quiet_tasks") or ()))
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


# The default app in every thread too (``celery.current_app`` in a relay thread is this app, not a fallback).
app.set_default()

# Every task's life cycle into the tracking stream the job monitor reads (signal handlers connect on import).
import services.kit.tracking  # noqa: E402, F401
