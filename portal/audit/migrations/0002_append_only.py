"""Append-only in PostgreSQL itself: UPDATE, DELETE and TRUNCATE on the audit tables are rejected.

The archival command (``audit_archive``) alone may DELETE old events: it sets the transaction-local
``atrium.audit_archival`` to ``on`` (documented in docs/audit.md). Anyone able to do that can also
disable triggers; what protects the record from such a person is the signed tree heads kept outside
the database, which ``audit_verify`` checks.
"""

from django.db import migrations

TABLES = ("audit_event", "audit_node", "audit_head", "audit_rejected")

FUNCTION = """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ('audit_event', 'audit_node')
       AND coalesce(current_setting('atrium.audit_archival', true), '') = 'on' THEN
        RETURN OLD;
    END IF;
    -- Test databases only (ATRIUM_ENV=test connects with this set): the test runner empties tables.
    IF TG_OP = 'TRUNCATE' AND coalesce(current_setting('atrium.audit_truncate', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
"""


def _forward() -> str:
    statements = [FUNCTION]
    for table in TABLES:
        statements.append(
            f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only();"
        )
        statements.append(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();"
        )
    return "\n".join(statements)


def _backward() -> str:
    statements = []
    for table in TABLES:
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table};")
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};")
    statements.append("DROP FUNCTION IF EXISTS audit_append_only();")
    return "\n".join(statements)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunSQL(_forward(), _backward())]
