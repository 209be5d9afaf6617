"""The kit's tables, present in every service's own database (app label ``kit``)."""

from __future__ import annotations

from django.db import models

from services.kit.ids import id_new


def _event_id() -> str:
    return id_new("evt")


class OutboxEventQuerySet(models.QuerySet["OutboxEvent"]):
    def unpublished(self) -> OutboxEventQuerySet:
        """Rows not yet delivered: not numbered, or numbered above their topic's watermark."""
        watermark = OutboxCounter.objects.filter(topic=models.OuterRef("topic")).values("published_seq")[:1]
        return self.filter(models.Q(seq__isnull=True) | models.Q(seq__gt=models.Subquery(watermark)))


class OutboxEvent(models.Model):
    """An event written in the same database transaction as the change it describes (transactional outbox).

    The relay (:mod:`services.kit.outbox`) numbers committed rows per topic with a gapless ``seq``
    (in commit order, by one relay at a time), publishes them to the topic's queue in ``seq`` order
    and then moves the topic's watermark (:attr:`OutboxCounter.published_seq`): a row is published
    when its ``seq`` is at or below it. Delivery is at least once; consumers de-duplicate on ``id``.
    ``attempts`` and ``last_error`` record failed publications.
    """

    id = models.CharField(primary_key=True, max_length=40, default=_event_id, editable=False)
    topic = models.CharField(max_length=40)
    payload = models.JSONField()
    created_at = models.DateTimeField()
    seq = models.BigIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    objects = OutboxEventQuerySet.as_manager()

    class Meta:
        db_table = "kit_outbox_event"
        constraints = [
            models.UniqueConstraint(fields=["topic", "seq"], name="kit_outbox_topic_seq_unique"),
        ]
        indexes = [
            # the relay's numbering order, read from the index with no sort
            models.Index(
                fields=["topic", "created_at", "id"],
                name="kit_outbox_unsequenced_order",
                condition=models.Q(seq__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.seq or '-'} {self.id}"


class OutboxCounter(models.Model):
    """Per topic: the last sequence number handed out and the last one published (only the relay,
    under its lock, moves them)."""

    topic = models.CharField(primary_key=True, max_length=40)
    last_seq = models.BigIntegerField(default=0)
    published_seq = models.BigIntegerField(default=0)

    class Meta:
        db_table = "kit_outbox_counter"

    def __str__(self) -> str:
        return f"{self.topic}: {self.published_seq}/{self.last_seq}"
