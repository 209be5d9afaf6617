"""Ledger background work: the integrity check and the expiry of holds."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.db import connection
from django.utils import timezone

from services.ledger.models import Transaction
from services.ledger.services.settlement import transactions_expire
from workers.ledger import expire_pending, integrity_check


def test_integrity_check_passes_on_consistent_books_and_exports_the_metric(api, funded, client):
    # given books built through the API
    _, customer = funded
    shop = api.account(name="shop")
    api.transfer(customer["id"], shop["id"], 10, reference="i1")
    api.transfer(customer["id"], shop["id"], 20, reference="i2", pending=True)

    # when the integrity task runs
    report = integrity_check.apply().get()

    # then nothing is wrong, and /metrics says so
    assert report["ok"] is True
    assert report["problems"] == 0
    metrics = client.get("/metrics").content.decode()
    assert "atrium_ledger_integrity_problems 0.0" in metrics


def test_integrity_check_reports_a_tampered_balance_loudly(api, funded, client, caplog):
    # given an account whose stored total was changed behind the ledger's back
    _, customer = funded
    with connection.cursor() as cursor:
        cursor.execute("UPDATE ledger_account SET credits_posted = credits_posted + 5 WHERE id = %s", [customer["id"]])

    # when the integrity task runs
    with caplog.at_level(logging.ERROR):
        report = integrity_check.apply().get()

    # then the account and the broken zero sum are named, logged as an error and exported
    assert report["ok"] is False
    assert [m["account"] for m in report["account_mismatches"]] == [customer["id"]]
    assert report["unbalanced_currencies"][0]["currency"] == "EUR"
    assert any(r.getMessage() == "ledger.integrity_violated" for r in caplog.records)
    assert "atrium_ledger_integrity_problems 2.0" in client.get("/metrics").content.decode()


def test_expired_holds_are_voided_and_release_their_amounts(api, funded):
    # given a hold that expired a minute ago and one that has not
    _, customer = funded
    shop = api.account(name="shop")
    past = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
    future = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    old = api.transfer(customer["id"], shop["id"], 100, reference="old-hold", pending=True, expires_at=past).json()
    new = api.transfer(customer["id"], shop["id"], 50, reference="new-hold", pending=True, expires_at=future).json()

    # when the expiry task runs
    voided = expire_pending.apply().get()

    # then only the expired hold is voided and its amount is available again
    assert voided == 1
    assert Transaction.objects.get(pk=old["id"]).status == "voided"
    assert Transaction.objects.get(pk=new["id"]).status == "pending"
    assert api.get(f"accounts/{customer['id']}").json()["available"] == 950


@pytest.mark.django_db
def test_expiry_with_nothing_due_does_nothing():
    assert transactions_expire() == 0
