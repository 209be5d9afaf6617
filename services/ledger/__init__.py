"""The ledger service: double-entry accounts, transactions and holds (its own Django project)."""
