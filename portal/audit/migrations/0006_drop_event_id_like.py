"""Drop the ``varchar_pattern_ops`` twin Django adds to ``audit_event.event_id``'s unique index.

Event ids are only ever matched exactly (the unique index serves that); the twin was one more index
written for every chained event.
"""

from django.db import migrations

_DROP_LIKE = """
DO $$
DECLARE name text;
BEGIN
    FOR name IN SELECT indexname FROM pg_indexes
                 WHERE schemaname = current_schema() AND tablename = 'audit_event'
                   AND indexname LIKE 'audit\\_event\\_event\\_id\\_%\\_like'
    LOOP
        EXECUTE format('DROP INDEX %I', name);
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_archive")]

    operations = [migrations.RunSQL(_DROP_LIKE, migrations.RunSQL.noop)]
