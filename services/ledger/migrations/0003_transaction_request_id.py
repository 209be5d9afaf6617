"""Every transaction keeps the id of the request that caused it (a batch item's own, else the call's).

The column has a database default, so rows written by code older than this migration (a rolling deploy) still
get one; the index is built concurrently (the table is the books: writes must not wait for it) and covers only
rows that have an id. The append-only guard learns the new column: a request id is never changed either.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

GUARD = """
CREATE OR REPLACE FUNCTION ledger_transaction_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status <> 'pending'
     OR NEW.status NOT IN ('posted', 'voided')
     OR NEW.id <> OLD.id OR NEW.reference <> OLD.reference OR NEW.currency <> OLD.currency
     OR NEW.description <> OLD.description OR NEW.metadata <> OLD.metadata
     OR NEW.content_hash <> OLD.content_hash OR NEW.created_at <> OLD.created_at
     OR NEW.expires_at IS DISTINCT FROM OLD.expires_at{extra} THEN
    RAISE EXCEPTION 'ledger: transaction % may only move from pending to posted or voided', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
"""


class Migration(migrations.Migration):
    atomic = False  # AddIndexConcurrently

    dependencies = [("ledger", "0002_append_only")]

    operations = [
        migrations.AddField(
            model_name="transaction",
            name="request_id",
            field=models.CharField(blank=True, db_default="", default="", max_length=128),
        ),
        migrations.RunSQL(
            GUARD.format(extra=" OR NEW.request_id <> OLD.request_id"),
            GUARD.format(extra=""),
        ),
        AddIndexConcurrently(
            model_name="transaction",
            index=models.Index(condition=~models.Q(request_id=""), fields=["request_id"], name="txn_request_id"),
        ),
    ]
