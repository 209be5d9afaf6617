"""Uptime is measured over the time checks covered, not over the number of checks: an hourly roll-up keeps the
seconds its checks covered, and of those the seconds up. Roll-ups written before this counted checks only; their
covered time is estimated as one check interval per check (at most the hour), up in proportion to the checks that
were not critical."""

from django.db import migrations, models

BACKFILL = """
UPDATE catalog_health_hour h SET
    covered_seconds = LEAST((h.passing + h.warning + h.critical) * s.health_interval_seconds, 3600),
    up_seconds = LEAST((h.passing + h.warning + h.critical) * s.health_interval_seconds, 3600)
        * (h.passing + h.warning) / GREATEST(h.passing + h.warning + h.critical, 1)
FROM catalog_service s WHERE s.id = h.service_id
"""


class Migration(migrations.Migration):
    dependencies = [("catalog", "0006_service_part_of_role")]

    operations = [
        migrations.AddField(
            model_name="healthhour",
            name="covered_seconds",
            field=models.FloatField(
                default=0, help_text="Time its checks covered (each until the next, at most a few intervals)."
            ),
        ),
        migrations.AddField(
            model_name="healthhour",
            name="up_seconds",
            field=models.FloatField(default=0, help_text="Of that, covered by checks that were not critical."),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
    ]
