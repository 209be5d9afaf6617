"""Contract tests every Atrium process must pass, imported by each suite (run under its settings)."""

from __future__ import annotations

import os
import re
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command


@pytest.mark.django_db
def test_migrations_match_the_models(client):
    # when makemigrations looks for changes, it finds none
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_openapi_schema_is_served(client):
    response = client.get("/api/schema", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == f"Atrium {settings.ATRIUM_SERVICE} API"
    assert any(path.startswith("/api/v1/") for path in schema["paths"])
    # and documents the bearer-token scheme every service verifies
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_openapi_schema_is_valid_and_documents_every_error_as_a_problem(client):
    # the schema passes OpenAPI validation without a warning
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull)
    schema = client.get("/api/schema", HTTP_ACCEPT="application/json").json()

    # and every operation documents the problems the kit may answer it with, as application/problem+json
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert operations
    for path, method, operation in operations:
        responses = operation["responses"]
        assert {"400", "401", "403", "404", "429", "503"} <= set(responses), (method, path)
        if method in ("post", "put", "patch", "delete"):
            assert {"409", "413", "415", "422"} <= set(responses), (method, path)
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)


def test_api_docs_load_their_assets_from_this_service_not_a_cdn(client):
    # given the Swagger UI page
    response = client.get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()

    # then every script and stylesheet it references is served locally
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets, html[:500]
    assert all(not a.startswith(("http://", "https://", "//")) for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


@pytest.mark.django_db
def test_readiness_checks_database_and_broker(client):
    response = client.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["service"] == settings.ATRIUM_SERVICE
    assert body["checks"]["database"]["status"] == "pass"
    assert body["checks"]["broker"]["status"] == "pass"


def test_unknown_route_is_a_problem_document(client):
    response = client.get("/api/v1/does-not-exist", HTTP_X_REQUEST_ID="contract-404")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"
    assert response.json()["request_id"] == "contract-404"


def test_whoami_needs_a_token(client):
    response = client.get("/api/v1/whoami")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_admin_login_page_renders_with_its_styles(client):
    response = client.get("/admin/login/")

    assert response.status_code == 200
    assert client.get("/static/admin/css/base.css").status_code == 200


def test_metrics_are_prometheus_text(client):
    client.get("/health/live")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert f'service="{settings.ATRIUM_SERVICE}"' in response.content.decode()
