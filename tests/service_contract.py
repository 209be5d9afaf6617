"""Contract tests every Atrium process must pass, imported by each suite (run under its settings)."""

from __future__ import annotations

import inspect
import json
import os
import re
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from jsonschema.exceptions import best_match
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator
from openapi_spec_validator import OpenAPIV30SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from services.kit.raised_errors import undeclared_errors
from services.kit.schema import declared_errors


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
    flow = schema["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == f"{settings.ATRIUM_TOKEN_URL}?audience={settings.JWT_AUDIENCE}"
    assert flow["scopes"]


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


def _endpoints() -> list[tuple[str, str, type, str]]:
    """(path, method, view class, method name) of every operation the schema documents."""
    generator = SchemaGenerator()
    generator._initialise_endpoints()
    out = []
    for path, _regex, method, callback in generator.endpoints:
        path = path.replace("{pk}", "{id}")  # the schema names a pk "id"
        view_class = callback.cls
        actions = getattr(callback, "actions", None) or {}
        out.append((path, method.lower(), view_class, actions.get(method.lower(), method.lower())))
    return out


def test_openapi_schema_passes_openapi_spec_validator(client):
    # given the schema this process serves
    schema = client.get("/api/schema", HTTP_ACCEPT="application/json").json()

    # then an OpenAPI validator independent of drf-spectacular finds nothing wrong (it raises on the first error)
    validate(schema, cls=OpenAPIV30SpecValidator)
    # and a hostile check: the same validator refuses the schema with one response broken
    broken = json.loads(json.dumps(schema))
    first_path = next(iter(broken["paths"].values()))
    next(iter(first_path.values()))["responses"] = "nothing"
    with pytest.raises(OpenAPIValidationError):
        validate(broken, cls=OpenAPIV30SpecValidator)


def schema_gaps(schema: dict) -> list[str]:
    """What an integrator would miss in ``schema``: an operation without a summary, a description, examples of its
    bodies (problems included) that match their schemas, the X-Request-ID header, or (unless public) the OAuth 2.0
    scheme."""
    gaps = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            where = f"{method.upper()} {path}"
            if not operation.get("summary"):
                gaps.append(f"{where}: no summary")
            if len(operation.get("description", "")) < 20:
                gaps.append(f"{where}: no description")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and not body.get("examples"):
                gaps.append(f"{where}: no request example")
            if body is not None:
                gaps += _stale_examples(schema, body, OAS30WriteValidator, f"{where} request")
            for status, response in operation["responses"].items():
                media = (response.get("content") or {}).get("application/json")
                if status.startswith("2") and media is not None:
                    gaps += _stale_examples(schema, media, OAS30ReadValidator, f"{where} {status}")
            for status, response in operation["responses"].items():
                for media_type, media in (response.get("content") or {}).items():
                    if not media.get("examples"):
                        gaps.append(f"{where}: no {status} {media_type} example")
                if "X-Request-ID" not in response.get("headers", {}):
                    gaps.append(f"{where}: no X-Request-ID header on {status}")
            public = {} in operation.get("security", [{}])
            if not public and not any("oauth2" in s for s in operation["security"]):
                gaps.append(f"{where}: not under the oauth2 scheme")
    return gaps


def _stale_examples(schema: dict, media: dict, validator: type, where: str) -> list[str]:
    """The examples of ``media`` that its schema refuses (an example gone stale is worse than none)."""
    document = {**media["schema"], "components": schema.get("components", {})}
    stale = []
    for name, example in (media.get("examples") or {}).items():
        if "value" not in example:
            continue
        error = best_match(validator(document).iter_errors(example["value"]))
        if error is not None:
            path = "/".join(str(p) for p in error.absolute_path)
            stale.append(f"{where}: example {name!r} does not match its schema at /{path}: {error.message[:200]}")
    return stale


def test_every_operation_is_documented_for_integrators(client):
    # given the schema
    schema = client.get("/api/schema", HTTP_ACCEPT="application/json").json()

    # then every operation has a summary, a description, examples of its bodies and its problems, the request id
    # header, and OAuth 2.0 security
    gaps = schema_gaps(schema)
    assert gaps == [], gaps


def test_no_docstring_leaks_into_the_schema(client):
    # given the developers' docstrings of every view class and view method the schema documents
    text = client.get("/api/schema", HTTP_ACCEPT="application/json").content.decode()
    docstrings = set()
    for _path, _method, view_class, name in _endpoints():
        for obj in (view_class, getattr(view_class, name, None)):
            doc = inspect.getdoc(obj) if obj is not None else None
            if doc and obj not in (object,) and not doc.startswith(("Set of ", "Base class ", "Intended ")):
                docstrings.add(doc.splitlines()[0][:60])
    assert docstrings

    # then none of them appears in the schema (its words come from api_operation only)
    leaked = sorted(doc for doc in docstrings if json.dumps(doc)[1:-1] in text)
    assert leaked == [], leaked


def test_every_view_declares_the_domain_errors_it_can_raise():
    # given every operation's view method, walked statically with what it calls in its app
    # then each domain error it can raise is declared (and so listed in the schema with its code)
    missing = {
        f"{method.upper()} {path}": sorted(error.code for error in undeclared_errors(view_class, name))
        for path, method, view_class, name in _endpoints()
    }
    undeclared = {where: codes for where, codes in missing.items() if codes}
    assert undeclared == {}, undeclared


def test_declared_errors_are_in_the_schema_with_their_codes(client):
    # given the schema and the errors each view declares
    schema = client.get("/api/schema", HTTP_ACCEPT="application/json").json()
    checked = 0
    for path, method, view_class, name in _endpoints():
        for error in declared_errors(getattr(view_class, name)):
            # then the operation answers that error's status as a problem, with each code and an example of it
            response = schema["paths"][path][method]["responses"][str(error.status)]
            for code in getattr(error, "codes", None) or (error.code,):
                assert f"`{code}`" in response["description"], (method, path, code)
                assert code in response["content"]["application/problem+json"]["examples"], (method, path)
                checked += 1
    assert checked > 0


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
