from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0003_trace_parent"),
    ]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="lease_owner",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="Which worker holds the lease (node:pid:claim): only it may renew the lease or write the "
                "payment while it lasts.",
                max_length=100,
            ),
        ),
    ]
