from django.db import migrations, models

TRIGGERS = """
CREATE TRIGGER audit_seal_no_update_delete BEFORE UPDATE OR DELETE ON audit_seal
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_seal_no_truncate BEFORE TRUNCATE ON audit_seal
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""
DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS audit_seal_no_update_delete ON audit_seal;
DROP TRIGGER IF EXISTS audit_seal_no_truncate ON audit_seal;
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_drop_event_id_like")]

    operations = [
        migrations.CreateModel(
            name="AuditSeal",
            fields=[
                ("first_seq", models.BigIntegerField(primary_key=True, serialize=False)),
                ("last_seq", models.BigIntegerField()),
                (
                    "row_xmin",
                    models.BigIntegerField(help_text="The 32-bit id of the transaction that wrote the rows."),
                ),
                ("key_id", models.CharField(max_length=100)),
                ("mac", models.BinaryField(max_length=32)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"db_table": "audit_seal", "ordering": ["-first_seq"]},
        ),
        migrations.RunSQL(TRIGGERS, DROP_TRIGGERS),
    ]
