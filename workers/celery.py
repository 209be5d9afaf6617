"""The Celery app as workers and beat run it: ``celery -A workers worker -Q <queue>`` / ``celery -A workers beat``.

The app itself (policy, routing, request ids, tracking) is the kit's (``services.kit.celery_app``), shared with the
web processes; workers add the beat schedule and beat's scheduler (``workers/scheduler.py``) and, through
``CELERY_IMPORTS``, the task modules of ``workers/``.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from services.kit.celery_app import app
from workers.beat import BEAT_SCHEDULE, QUIET_TASKS

# Beat sends django-celery-beat's database schedule, into which workers/scheduler.py syncs BEAT_SCHEDULE at start.
app.conf.update(
    beat_schedule=BEAT_SCHEDULE, beat_scheduler="workers.scheduler:Scheduler", atrium_quiet_tasks=QUIET_TASKS
)

__all__ = ["app"]
