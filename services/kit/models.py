"""The kit's tables, present in every service's own database (app label ``kit``)."""

from __future__ import annotations

from django.db import models

from services.kit.ids import id_new


def _event_id() -> str:
    return id_new("evt")


class OutboxEvent(models.Model):
    """An event written in the same database transaction as the change it describes (transactional outbox).

    The relay (:mod:`services.kit.outbox`) numbers committed rows per topic with a gapless ``seq``
    (in commit order, by one relay at a time), publishes them to the topic's queue and stamps
    ``published_at``. Delivery is at least once; consumers de-duplicate on ``id``.
    """

    id = models.CharField(primary_key=True, max_length=40, default=_event_id, editable=False)
    topic = models.CharField(max_length=40)
    payload = models.JSONField()
    created_at = models.DateTimeField()
    seq = models.BigIntegerField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "kit_outbox_event"
        constraints = [
            models.UniqueConstraint(fields=["topic", "seq"], name="kit_outbox_topic_seq_unique"),
        ]
        indexes = [
            models.Index(
                fields=["topic", "created_at"], name="kit_outbox_unsequenced", condition=models.Q(seq__isnull=True)
            ),
            models.Index(
                fields=["topic", "seq"], name="kit_outbox_unpublished", condition=models.Q(published_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.seq or '-'} {self.id}"


class OutboxCounter(models.Model):
    """The last sequence number handed out per topic (only the relay, under its lock, moves it)."""

    topic = models.CharField(primary_key=True, max_length=40)
    last_seq = models.BigIntegerField(default=0)

    class Meta:
        db_table = "kit_outbox_counter"

    def __str__(self) -> str:
        return f"{self.topic}: {self.last_seq}"
