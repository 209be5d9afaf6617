"""Ledger data. Accounts, transactions and postings arrive with the ledger issue."""
