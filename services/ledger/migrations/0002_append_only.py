"""Make the books append-only in PostgreSQL itself.

Postings are never updated or deleted; a transaction may only change status from
pending to posted (setting posted_at) or voided (setting voided_at), nothing else;
accounts are never deleted (close them). Python checks are the second line.
"""

from django.db import migrations

SQL = """
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger: % on % is not allowed (the books are append-only)', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE FUNCTION ledger_transaction_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status <> 'pending'
     OR NEW.status NOT IN ('posted', 'voided')
     OR NEW.id <> OLD.id OR NEW.reference <> OLD.reference OR NEW.currency <> OLD.currency
     OR NEW.description <> OLD.description OR NEW.metadata <> OLD.metadata
     OR NEW.content_hash <> OLD.content_hash OR NEW.created_at <> OLD.created_at
     OR NEW.expires_at IS DISTINCT FROM OLD.expires_at THEN
    RAISE EXCEPTION 'ledger: transaction % may only move from pending to posted or voided', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER ledger_posting_append_only BEFORE UPDATE OR DELETE ON ledger_posting
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_transaction_no_delete BEFORE DELETE ON ledger_transaction
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_transaction_status_only BEFORE UPDATE ON ledger_transaction
  FOR EACH ROW EXECUTE FUNCTION ledger_transaction_guard();
CREATE TRIGGER ledger_account_no_delete BEFORE DELETE ON ledger_account
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
"""

REVERSE = """
DROP TRIGGER ledger_account_no_delete ON ledger_account;
DROP TRIGGER ledger_transaction_status_only ON ledger_transaction;
DROP TRIGGER ledger_transaction_no_delete ON ledger_transaction;
DROP TRIGGER ledger_posting_append_only ON ledger_posting;
DROP FUNCTION ledger_transaction_guard();
DROP FUNCTION ledger_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
