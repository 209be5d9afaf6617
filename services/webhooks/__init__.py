"""The webhooks service: Standard Webhooks delivery of payments and ledger events (its own Django project)."""
