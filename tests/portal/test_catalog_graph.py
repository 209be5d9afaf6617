"""Declared against observed dependencies: services report the calls they received, by calling client; the
graph shows both and flags drift either way."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from portal.catalog.models import ObservedCall
from tests.portal.factories import machine_client
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db


class Registrar:
    """A service's own machine client, as the process would hold it."""

    def __init__(self, mint_token: Any) -> None:
        self.machine = machine_client(audiences=["portal"], scopes=["catalog:register", "portal:read"])
        token = mint_token(self.machine, "portal", scope="catalog:register portal:read")
        self.api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def register(self, slug: str, **manifest: Any) -> None:
        body = {"display_name": slug.title(), **manifest}
        response = self.api.put(f"/api/v1/catalog/services/{slug}", json.dumps(body), content_type="application/json")
        assert response.status_code in (200, 201), response.content

    def report(self, slug: str, callers: dict[str, int]) -> Any:
        return self.api.post(
            f"/api/v1/catalog/services/{slug}/calls", json.dumps({"callers": callers}), content_type="application/json"
        )


def _edges(api: Client) -> dict[tuple[str, str], dict[str, Any]]:
    body = api.get("/api/v1/catalog/graph").json()
    return {(e["from"], e["to"]): e for e in body["edges"]}


def test_payments_calling_the_ledger_becomes_an_observed_edge_and_drift_is_flagged_both_ways(mint_token):
    ledger, payments, webhooks = Registrar(mint_token), Registrar(mint_token), Registrar(mint_token)
    ledger.register("ledger", dependencies=[{"resource": "postgres"}])
    payments.register("payments", dependencies=[{"service": "ledger"}, {"service": "fraud-engine"}])
    webhooks.register("webhooks")

    # the ledger reports the calls it received: from payments' client, from webhooks' (undeclared), and from a
    # client that registered no service (a person's script: not an edge)
    assert ledger.report("ledger", {payments.machine.id: 40, webhooks.machine.id: 2, "cli_script": 5}).json() == {
        "callers": 3
    }
    ledger.report("ledger", {payments.machine.id: 2})

    edges = _edges(ledger.api)
    used = edges[("payments", "ledger")]
    assert (used["declared"], used["observed"], used["calls"], used["drift"]) == (True, True, 42, None)
    assert edges[("payments", "fraud-engine")]["drift"] == "declared_not_observed"
    assert edges[("webhooks", "ledger")]["drift"] == "observed_not_declared"
    assert edges[("ledger", "postgres")]["kind"] == "resource"
    assert edges[("ledger", "postgres")]["drift"] is None
    assert not any("cli_script" in key for key in edges)
    nodes = {n["id"]: n for n in ledger.api.get("/api/v1/catalog/graph").json()["nodes"]}
    assert nodes["fraud-engine"]["registered"] is False
    assert nodes["postgres"]["kind"] == "resource"

    # calls older than the observation window no longer count
    ObservedCall.objects.update(last_seen=timezone.now() - dt.timedelta(days=8))
    assert _edges(ledger.api)[("payments", "ledger")]["drift"] == "declared_not_observed"
    assert ("webhooks", "ledger") not in _edges(ledger.api)


def test_only_the_service_itself_reports_its_calls_and_bad_reports_are_problems(mint_token):
    ledger, other = Registrar(mint_token), Registrar(mint_token)
    ledger.register("ledger")

    assert_problem(other.report("ledger", {"cli_x": 1}), 403, "service_registered_by_another_client")
    assert_problem(ledger.report("nope", {"cli_x": 1}), 404, "service_not_found")
    assert_problem(ledger.report("ledger", {"cli_x": -1}), 400, "validation_error")
    assert_problem(ledger.report("ledger", {"": 1}), 400, "validation_error")
    bad = ledger.api.post("/api/v1/catalog/services/ledger/calls", "[]", content_type="application/json")
    assert_problem(bad, 400, "validation_error")
    assert not ObservedCall.objects.exists()
    assert ledger.report("ledger", {}).json() == {"callers": 0}


def test_a_client_that_registered_a_server_and_its_workers_calls_as_the_server(mint_token):
    # given the payments client registered its worker first, then its web server (the one with a base URL)
    ledger, payments = Registrar(mint_token), Registrar(mint_token)
    ledger.register("ledger")
    payments.register("worker-payments", queues=["payments"])
    payments.register("payments", base_url="http://127.0.0.1:8002", dependencies=[{"service": "ledger"}])

    # when the ledger reports calls from that client
    ledger.report("ledger", {payments.machine.id: 3})

    # then the edge starts at the server, as declared; no edge starts at the worker
    edges = _edges(ledger.api)
    assert edges[("payments", "ledger")]["observed"] is True
    assert edges[("payments", "ledger")]["drift"] is None
    assert ("worker-payments", "ledger") not in edges
