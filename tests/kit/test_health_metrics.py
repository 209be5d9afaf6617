"""Liveness, readiness against the real database and broker, and Prometheus metrics."""

from __future__ import annotations

import re
import uuid

import pytest

from devtools.infra import free_port
from services.kit.metrics import REGISTRY

HEALTH = "application/health+json"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the exposition line for ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def test_liveness_is_health_json_and_never_cached(client):
    # when the liveness probe asks
    response = client.get("/health/live")

    # then the process says it is up
    assert response.status_code == 200
    assert response["Content-Type"] == HEALTH
    assert response.json() == {"status": "pass", "service": "ledger"}
    assert "no-store" in response["Cache-Control"]


def test_liveness_refuses_writes(client):
    # when something POSTs to the probe
    response = client.post("/health/live")

    # then it is not allowed, as a problem document like every other route
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "method_not_allowed"


def test_metrics_refuse_writes(client):
    response = client.post("/metrics")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_readiness_passes_with_database_and_broker_up(client, settings):
    # given the real PostgreSQL and Redis of this run
    assert settings.CELERY_BROKER_URL.startswith("redis://")

    # when the readiness probe asks
    response = client.get("/health/ready")

    # then both checks pass, each timed
    assert response.status_code == 200
    assert response["Content-Type"] == HEALTH
    body = response.json()
    assert body["status"] == "pass"
    assert body["service"] == "ledger"
    assert set(body["checks"]) == {"database", "broker"}
    for check in body["checks"].values():
        assert check["status"] == "pass"
        assert check["latency_ms"] >= 0
        assert "output" not in check


@pytest.mark.django_db
def test_readiness_fails_with_503_when_the_broker_is_down(client, settings):
    # given a broker URL where nothing listens
    port = free_port()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"

    # when the readiness probe asks
    response = client.get("/health/ready")

    # then the service is not ready, saying why, while the database still passes
    assert response.status_code == 503
    assert response["Content-Type"] == HEALTH
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"]["status"] == "pass"
    broker = body["checks"]["broker"]
    assert broker["status"] == "fail"
    assert "ConnectionError" in broker["output"]
    assert str(port) in broker["output"]
    assert broker["latency_ms"] < 5000


@pytest.mark.django_db
def test_readiness_fails_when_no_broker_is_configured(client, settings):
    # given no broker URL at all
    settings.CELERY_BROKER_URL = ""

    # when the readiness probe asks
    response = client.get("/health/ready")

    # then it is a 503 naming the missing configuration
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["output"] == "RuntimeError: no broker configured"


def test_metrics_count_requests_by_service_view_method_and_status(client):
    # given the counter before
    labels = {"service": "ledger", "method": "GET", "view": "health-live", "status": "200"}
    before = REGISTRY.get_sample_value("atrium_http_requests_total", labels) or 0.0

    # when the liveness probe is asked twice and metrics are scraped
    client.get("/health/live")
    client.get("/health/live")
    response = client.get("/metrics")

    # then the exposition counts them under the view's name
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    assert "# TYPE atrium_http_requests_total counter" in text
    assert sample(text, "atrium_http_requests_total", **labels) == before + 2


def test_metrics_time_requests_in_a_histogram(client):
    # given the histogram count before
    labels = {"service": "ledger", "method": "GET", "view": "health-live"}
    before = REGISTRY.get_sample_value("atrium_http_request_duration_seconds_count", labels) or 0.0

    # when a request is made and metrics are scraped
    client.get("/health/live")
    text = client.get("/metrics").content.decode()

    # then it was observed, in cumulative buckets up to +Inf
    assert "# TYPE atrium_http_request_duration_seconds histogram" in text
    assert sample(text, "atrium_http_request_duration_seconds_count", **labels) == before + 1
    assert sample(text, "atrium_http_request_duration_seconds_bucket", le="+Inf", **labels) == before + 1
    assert sample(text, "atrium_http_request_duration_seconds_bucket", le="0.005", **labels) is not None
    assert sample(text, "atrium_http_request_duration_seconds_sum", **labels) > 0


def test_unknown_paths_share_one_metrics_label(client):
    # when random unknown paths are requested
    unique = uuid.uuid4().hex
    labels = {"service": "ledger", "method": "GET", "view": "not-found", "status": "404"}
    before = REGISTRY.get_sample_value("atrium_http_requests_total", labels) or 0.0
    client.get(f"/api/v1/{unique}")
    client.get(f"/nowhere/{unique}")

    # then they are counted under the catch-all's name, never as their raw path
    text = client.get("/metrics").content.decode()
    assert sample(text, "atrium_http_requests_total", **labels) == before + 2
    assert unique not in text
