"""Indexes no query reads go, so every write maintains fewer (measured: bench.webhooks, docs/benchmarks.md).

- ``webhooks_delivery``: the single-column indexes of its two foreign keys (and their ``varchar_pattern_ops``
  twins): ``delivery_unique`` (message, endpoint) and ``delivery_endpoint_state`` (endpoint, state, msg_seq) lead
  with those columns and serve every lookup (cascading deletes included). Its fill factor goes to 80, so that the
  dispatcher's claim (it sets ``leased_until``, in no index) can update a row in place (a HOT update: no new
  index entries).
- ``webhooks_attempt``: the index of ``delivery_id``: attempts are read by endpoint or message (and time).
- ``webhooks_message``: the ``varchar_pattern_ops`` (LIKE 'prefix%') twins of the ``id`` and ``event_id`` unique
  indexes: nothing searches them by prefix (the admin's searches on them are exact, ``=id``, ``=event_id``).
"""

import django.db.models.deletion
from django.db import migrations, models

LIKE_INDEXES = (
    ("webhooks_message_id_61f38931_like", "webhooks_message", "id"),
    ("webhooks_message_event_id_91ce0ee8_like", "webhooks_message", "event_id"),
)


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0004_delivery_due_global_dropped"),
    ]

    operations = [
        migrations.AlterField(
            model_name="attempt",
            name="delivery",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="attempt_log",
                to="webhooks.delivery",
            ),
        ),
        migrations.AlterField(
            model_name="delivery",
            name="endpoint",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="deliveries",
                to="webhooks.endpoint",
            ),
        ),
        migrations.AlterField(
            model_name="delivery",
            name="message",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="deliveries",
                to="webhooks.message",
            ),
        ),
        *(
            migrations.RunSQL(
                f"DROP INDEX IF EXISTS {name}",
                reverse_sql=f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column} varchar_pattern_ops)",
            )
            for name, table, column in LIKE_INDEXES
        ),
        migrations.RunSQL(
            "ALTER TABLE webhooks_delivery SET (fillfactor = 80)",
            reverse_sql="ALTER TABLE webhooks_delivery RESET (fillfactor)",
        ),
    ]
