"""Risk screening: the ``review`` status (in the choices and the ``payment_status_valid`` check) and the payment's
risk columns.

The new columns have constant database defaults, so adding them rewrites no row (PostgreSQL ≥ 11) and the creation
INSERT, which does not name them, keeps working. The partial index ``payment_open`` (the claims' and the sweeper's
work) is deliberately unchanged: a payment in ``review`` waits for a person, not for a worker, so it must not be
claimed, retried or swept; operators find payments in review through ``payment_status`` (status, created_at).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0004_lease_owner"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="payment",
            name="payment_status_valid",
        ),
        migrations.AddField(
            model_name="payment",
            name="risk_assessment_id",
            field=models.CharField(
                blank=True, db_default="", default="", help_text="The risk service's assessment (rsk_…).", max_length=40
            ),
        ),
        migrations.AddField(
            model_name="payment",
            name="risk_decision",
            field=models.CharField(
                blank=True,
                choices=[("", "not assessed"), ("allow", "Allow"), ("review", "Review"), ("deny", "Deny")],
                db_default="",
                default="",
                help_text="The risk service's decision (blank: not assessed).",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="payment",
            name="risk_reasons",
            field=models.JSONField(
                blank=True,
                db_default=models.Value([], models.JSONField()),
                default=list,
                help_text="The codes of the risk reasons.",
            ),
        ),
        migrations.AddField(
            model_name="payment",
            name="risk_score",
            field=models.SmallIntegerField(blank=True, help_text="The risk score, 0-100.", null=True),
        ),
        migrations.AlterField(
            model_name="payment",
            name="status",
            field=models.CharField(
                choices=[
                    ("created", "Created"),
                    ("screening", "Screening"),
                    ("review", "Review"),
                    ("processing", "Processing"),
                    ("settled", "Settled"),
                    ("rejected", "Rejected"),
                    ("failed", "Failed"),
                    ("canceled", "Canceled"),
                ],
                default="created",
                max_length=12,
            ),
        ),
        migrations.AddConstraint(
            model_name="payment",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "status__in",
                        ["created", "screening", "review", "processing", "settled", "rejected", "failed", "canceled"],
                    )
                ),
                name="payment_status_valid",
            ),
        ),
    ]
