"""Processes become parts of services: every catalog entry names the service it belongs to (``part_of``) and its
role there. Existing entries are read from the slugs the agents used: ``worker-<queues>`` → a worker of the service
its first queue's worker runs with, ``relay-<service>`` → that service's relay, ``beat`` and ``jobs-monitor`` → the
portal's (they run with its settings); anything else is a service of its own, with the role ``web``."""

import django.core.validators
from django.db import migrations, models

# services/kit/queues.QUEUE_SERVICES when this was written (a migration keeps its own copy).
QUEUE_SERVICES = {"portal": "portal", "audit": "portal", "ledger": "ledger", "payments": "payments"}


def part_and_role(slug: str, queues: list[str]) -> tuple[str, str]:
    if slug == "beat":
        return "portal", "beat"
    if slug == "jobs-monitor":
        return "portal", "monitor"
    if slug.startswith("relay-") and len(slug) > len("relay-"):
        return slug.removeprefix("relay-"), "relay"
    if slug.startswith("worker-"):
        names = queues or slug.removeprefix("worker-").split("-")
        for name in names:
            if name in QUEUE_SERVICES:
                return QUEUE_SERVICES[name], "worker"
        return slug, "worker"
    return slug, "web"


def forwards(apps, schema_editor):
    Service = apps.get_model("catalog", "Service")
    for service in Service.objects.all():
        service.part_of, service.role = part_and_role(service.slug, list(service.queues))
        service.save(update_fields=["part_of", "role"])


class Migration(migrations.Migration):
    dependencies = [("catalog", "0005_health_check_error_class")]

    operations = [
        migrations.AddField(
            model_name="service",
            name="part_of",
            field=models.CharField(
                blank=True,
                db_index=True,
                default="",
                help_text="The slug of the service this process belongs to (blank: its own slug, a service of its own).",
                max_length=50,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[a-z][a-z0-9-]{0,49}$",
                        "1 to 50 characters: lower-case letters, digits and dashes, a letter first.",
                    )
                ],
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="service",
            name="role",
            field=models.CharField(
                choices=[
                    ("web", "Web"),
                    ("worker", "Worker"),
                    ("relay", "Relay"),
                    ("beat", "Beat"),
                    ("monitor", "Monitor"),
                    ("other", "Other"),
                ],
                default="web",
                max_length=8,
            ),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="service",
            constraint=models.CheckConstraint(
                condition=models.Q(role__in=["web", "worker", "relay", "beat", "monitor", "other"]),
                name="catalog_service_role",
            ),
        ),
        migrations.AddConstraint(
            model_name="service",
            constraint=models.CheckConstraint(condition=~models.Q(part_of=""), name="catalog_service_part_of"),
        ),
    ]
