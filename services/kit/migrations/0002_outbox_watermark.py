"""Publication is a per-topic watermark instead of a per-row stamp; the relay's indexes are leaner.

Stamping ``published_at`` rewrote every row (and all its indexes) a second time after numbering it;
the relay now moves ``OutboxCounter.published_seq`` once per batch. Rows already stamped keep their
status: the watermark starts at the highest sequence below which every row was published.
"""

from django.db import migrations, models

_WATERMARK = """
UPDATE kit_outbox_counter c SET published_seq = coalesce(
    (SELECT min(e.seq) - 1 FROM kit_outbox_event e
      WHERE e.topic = c.topic AND e.seq IS NOT NULL AND e.published_at IS NULL),
    c.last_seq)
"""

# Django adds a varchar_pattern_ops twin to every varchar primary key; nothing here filters event ids
# with LIKE, and each twin is one more index written per row.
_DROP_LIKE = """
DO $$
DECLARE name text;
BEGIN
    FOR name IN SELECT indexname FROM pg_indexes
                 WHERE schemaname = current_schema() AND tablename = 'kit_outbox_event'
                   AND indexname LIKE 'kit\\_outbox\\_event\\_id\\_%\\_like'
    LOOP
        EXECUTE format('DROP INDEX %I', name);
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("kit", "0001_outbox")]

    operations = [
        migrations.AddField(model_name="outboxcounter", name="published_seq", field=models.BigIntegerField(default=0)),
        migrations.RunSQL(_WATERMARK, migrations.RunSQL.noop),
        migrations.RemoveIndex(model_name="outboxevent", name="kit_outbox_unpublished"),
        migrations.RemoveIndex(model_name="outboxevent", name="kit_outbox_unsequenced"),
        migrations.RemoveField(model_name="outboxevent", name="published_at"),
        migrations.AddIndex(
            model_name="outboxevent",
            index=models.Index(
                condition=models.Q(("seq__isnull", True)),
                fields=["topic", "created_at", "id"],
                name="kit_outbox_unsequenced_order",
            ),
        ),
        migrations.RunSQL(_DROP_LIKE, migrations.RunSQL.noop),
    ]
