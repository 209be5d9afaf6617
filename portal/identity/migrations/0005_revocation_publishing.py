"""Publishing revocations: the secret generation tokens carry, the cut-off of a revoked client's tokens, and how
long a client stays published. Clients revoked before this migration are published too.

Generations start at 0 for every client, also one rotated before: tokens minted before this release carry no
generation, which reads as 0, so counting earlier rotations would refuse tokens of the current secret."""

import datetime as dt

from django.db import migrations, models

# The longest token lifetime (MachineClient.token_ttl_seconds) plus a margin for verifiers' leeway.
KEEP = dt.timedelta(seconds=3600 + 300)


def backfill(apps, schema_editor):
    MachineClient = apps.get_model("identity", "MachineClient")
    for client in MachineClient.objects.filter(revoked_at__isnull=False):
        client.tokens_not_before = client.revoked_at
        client.revocation_until = client.revoked_at + KEEP
        client.save(update_fields=["tokens_not_before", "revocation_until"])


class Migration(migrations.Migration):
    dependencies = [
        ("identity", "0004_login_unlock"),
    ]

    operations = [
        migrations.AddField(
            model_name="machineclient",
            name="secret_generation",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="machineclient",
            name="tokens_not_before",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="machineclient",
            name="revocation_until",
            field=models.DateTimeField(blank=True, db_index=True, editable=False, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
