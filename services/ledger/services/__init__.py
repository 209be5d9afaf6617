"""Ledger writes, one module per subject (import the module you need):

* :mod:`.accounts` — ``account_create``, ``account_update``;
* :mod:`.transactions` — ``transaction_create``, ``transactions_create`` (batches, atomic or item by item)
  and the audit of refused creations;
* :mod:`.settlement` — holds: ``transaction_post``, ``transaction_void``, ``transactions_settle``,
  ``transactions_expire``;
* :mod:`.bulk` — the write path they share: account locks, in-memory balances, the pipelined or COPY
  writes and commit, retry on deadlock, batch isolation helpers.

Reads are in :mod:`services.ledger.selectors`, raw SQL in :mod:`services.ledger.queries`.
"""
