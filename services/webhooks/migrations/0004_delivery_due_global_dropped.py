"""The global due index goes: the dispatcher claims per endpoint (``delivery_due_endpoint``), and with both
indexes the planner could pick the global one for a per-endpoint claim, walking another endpoint's backlog of
due rows (a slow endpoint's) on every claim of a healthy one. Nothing else reads pending deliveries by time."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0003_delivery_trigger"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="delivery", name="delivery_due"),
    ]
