"""Attempt retention: the hourly ``webhooks.attempts_purge`` deletes attempts past the retention, in batches."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from services.webhooks.models import Attempt
from services.webhooks.services.retention import attempts_purge
from workers.beat import BEAT_SCHEDULE

pytestmark = pytest.mark.django_db


def _attempts(ages_days: list[float]) -> None:
    now = timezone.now()
    Attempt.objects.bulk_create(
        [
            Attempt(
                delivery_id=n + 1,
                message_id=f"msg_{n}",
                endpoint_id="ep_x",
                number=1,
                at=now - dt.timedelta(days=age),
                status_code=200,
            )
            for n, age in enumerate(ages_days)
        ]
    )


def test_attempts_past_the_retention_go_in_batches_the_rest_stay(settings):
    settings.WEBHOOKS_ATTEMPT_RETENTION_DAYS = 30
    _attempts([31, 40, 45, 60, 90, 29.9, 1, 0])

    assert attempts_purge(batch=2) == 5

    assert sorted((timezone.now() - a.at).days for a in Attempt.objects.all()) == [0, 1, 29]
    assert attempts_purge(days=0) == 3
    assert Attempt.objects.count() == 0


def test_the_purge_is_a_scheduled_housekeeping_task():
    from workers import webhooks

    assert BEAT_SCHEDULE["webhooks.attempts_purge"]["task"] == webhooks.attempts_purge.name == "webhooks.attempts_purge"
