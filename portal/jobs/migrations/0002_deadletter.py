from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="DeadLetter",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "stream_id",
                    models.CharField(
                        help_text="The stream entry id, or <entry id>/<n> for one event of a batch.",
                        max_length=64,
                        unique=True,
                    ),
                ),
                ("reason", models.TextField()),
                ("attempts", models.PositiveIntegerField(default=1)),
                ("raw", models.BinaryField(help_text="What arrived (its first MiB).")),
                ("raw_sha256", models.CharField(help_text="SHA-256 of every byte that arrived.", max_length=64)),
                ("raw_bytes", models.BigIntegerField(help_text="How many bytes arrived.")),
                ("parked_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"db_table": "jobs_deadletter", "ordering": ["-id"], "verbose_name": "unrecorded tracking event"},
        ),
    ]
