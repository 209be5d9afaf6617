"""Beat's scheduler: django-celery-beat's database schedule, with the code's schedule (``workers/beat.py``) synced
into it when beat starts.

Beat sends what the database holds (``django_celery_beat_periodictask``, editable in the admin; the job dashboard's
schedule page pauses, resumes and runs its tasks). At start, :func:`portal.jobs.services.schedule_sync` brings the
code's entries in idempotently — it never writes ``enabled`` on a task that exists, so a pause survives restarts and
deploys, and it keeps a task an operator changed in the admin.
"""

from __future__ import annotations

from typing import Any

from django_celery_beat.schedulers import DatabaseScheduler

from portal.jobs.services import schedule_sync
from services.kit.logs import get_logger

log = get_logger(__name__)


class Scheduler(DatabaseScheduler):
    """django-celery-beat's ``DatabaseScheduler``, whose code-defined entries come through our sync."""

    def setup_schedule(self) -> None:
        # Not DatabaseScheduler's update_from_dict(beat_schedule): it rewrites each code entry on every start
        # (an operator's change in the admin would not survive a restart).
        schedule_sync(entries=self.app.conf.beat_schedule)
        self.install_default_entries(self.schedule)

    def install_default_entries(self, data: Any) -> None:
        # Celery's own scheduler adds celery.backend_cleanup only for a result backend that does not expire
        # results by itself; django-celery-beat adds it for every backend. Redis expires them: nothing to add
        # (and no worker consumes the queue a "celery." task would go to).
        if self.app.backend.supports_autoexpire:
            return
        super().install_default_entries(data)
