"""A ledger worker runs the ledger's tasks with the ledger's settings and database."""

from __future__ import annotations

from workers.celery import app


def test_ledger_worker_runs_the_integrity_check_on_its_own_database(harness):
    # given a ledger worker on a fresh ledger database
    harness.worker("ledger")

    # when the beat-scheduled integrity check is sent by name from this (portal) process
    report = app.send_task("ledger.integrity_check").get(timeout=30)

    # then the ledger worker ran it against its own empty, consistent books
    assert report["ok"] is True
    assert report["problems"] == 0


def test_ledger_worker_runs_the_expiry_of_holds(harness):
    harness.worker("ledger")

    assert app.send_task("ledger.expire_pending").get(timeout=30) == 0
