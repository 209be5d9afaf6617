"""Health URLs the portal must not poll: refused at registration (API, admin form, catalog_import) with stable
codes, blocked by the kit's outbound guard when polled (nothing is requested), and what a check keeps is a
status code and an error class, never a body."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from portal.catalog.health import health_poll
from portal.catalog.models import HealthCheck, Service
from tests.portal.factories import machine_client, superuser
from tests.problems import assert_problem
from tests.servers import LocalServer

pytestmark = pytest.mark.django_db

URL = "/api/v1/catalog/services"
LOOPBACK = ["127.0.0.1/32"]


@pytest.fixture
def registrar(mint_token: Any) -> Client:
    client = machine_client(audiences=["portal"], scopes=["catalog:register", "portal:read"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(client, 'portal', scope='catalog:register portal:read')}")


def _put(api: Client, slug: str, body: dict[str, Any]) -> Any:
    return api.put(f"{URL}/{slug}", json.dumps(body), content_type="application/json")


# (base URL, health URL, allow-list, expected code: None when accepted)
REGISTRATIONS: list[tuple[str, str, list[str], str | None]] = [
    # an inside address, even as the service's own host
    ("http://ledger.example:8001", "http://169.254.169.254/latest/meta-data/", LOOPBACK, "health_url_blocked"),
    ("http://169.254.169.254", "http://169.254.169.254/latest/meta-data/", LOOPBACK, "health_url_blocked"),
    ("http://ledger.example", "http://[::ffff:127.0.0.1]:8001/health", LOOPBACK, "health_url_blocked"),
    ("http://ledger.example", "http://[::1]:8001/health", LOOPBACK, "health_url_blocked"),
    ("http://ledger.example", "http://10.0.0.5/health", LOOPBACK, "health_url_blocked"),
    ("http://ledger.example", "http://[fd00::1]/health", LOOPBACK, "health_url_blocked"),
    ("http://ledger.example", "http://100.64.0.1/health", LOOPBACK, "health_url_blocked"),
    ("http://127.0.0.1:8001", "http://127.0.0.2:8001/health/ready", LOOPBACK, "health_url_blocked"),
    ("http://127.0.0.1:8001", "http://127.0.0.1:8001/health/ready", [], "health_url_blocked"),
    ("http://10.1.2.3:8001", "http://10.1.2.3:8001/health", LOOPBACK, "health_url_blocked"),
    # another host than the service's own
    ("http://ledger.example", "http://localhost:8001/health", LOOPBACK, "health_url_foreign_host"),
    ("http://ledger.example", "http://payments.example/health", LOOPBACK, "health_url_foreign_host"),
    ("http://ledger.example", "http://ledger.example.evil.test/health", LOOPBACK, "health_url_foreign_host"),
    ("", "https://fraud.example/health", LOOPBACK, "health_url_foreign_host"),
    ("http://8.8.8.8", "http://8.8.4.4/health", LOOPBACK, "health_url_foreign_host"),
    # not a URL the guard reads
    ("http://ledger.example", "http://user:secret@ledger.example/health", LOOPBACK, "health_url_invalid"),
    # accepted: the service's own host (any port, any spelling of the same name), or an allow-listed address
    ("http://ledger.example:8001", "http://ledger.example:8001/health/ready", LOOPBACK, None),
    ("http://ledger.example:8001", "https://ledger.example:9443/health", LOOPBACK, None),
    ("https://LEDGER.example.", "https://ledger.example/health", LOOPBACK, None),
    ("http://ledger.example", "http://127.0.0.1:8001/health/ready", LOOPBACK, None),
    ("http://127.0.0.1:8001", "http://127.0.0.1:8001/health/ready", LOOPBACK, None),
    ("http://10.1.2.3:8001", "http://10.1.2.3:8001/health", ["10.0.0.0/8"], None),
    ("http://8.8.8.8", "http://8.8.8.8/health", [], None),
    ("http://ledger.example", "", [], None),
]


@pytest.mark.parametrize(("base_url", "health_url", "allow", "code"), REGISTRATIONS)
def test_registration_refuses_health_urls_the_portal_must_not_poll(
    registrar, settings, base_url, health_url, allow, code
):
    settings.ATRIUM_OUTBOUND_ALLOW_NETWORKS = allow

    response = _put(registrar, "ledger", {"display_name": "Ledger", "base_url": base_url, "health_url": health_url})

    if code is None:
        assert response.status_code == 201, response.content
        assert Service.objects.get(slug="ledger").health_url == health_url
        return
    problem = assert_problem(response, 422, code)
    assert problem["errors"] == [
        {"field": "health_url", "pointer": "#/health_url", "code": code, "detail": problem["detail"]}
    ]
    assert not Service.objects.exists()


def test_a_new_base_url_is_refused_when_it_leaves_the_stored_health_url_on_another_host(registrar, settings):
    settings.ATRIUM_OUTBOUND_ALLOW_NETWORKS = []
    manifest = {"display_name": "Ledger", "base_url": "http://ledger.example", "health_url": "http://ledger.example/h"}
    assert _put(registrar, "ledger", manifest).status_code == 201

    moved = _put(registrar, "ledger", {"display_name": "Ledger", "base_url": "http://elsewhere.example"})
    health_only = _put(registrar, "ledger", {"display_name": "Ledger", "health_url": "http://169.254.169.254/"})

    assert_problem(moved, 422, "health_url_foreign_host")
    assert_problem(health_only, 422, "health_url_blocked")
    stored = Service.objects.get(slug="ledger")
    assert (stored.base_url, stored.health_url) == ("http://ledger.example", "http://ledger.example/h")


def test_the_admin_form_refuses_the_same_health_urls(client, settings):
    settings.ATRIUM_OUTBOUND_ALLOW_NETWORKS = LOOPBACK
    client.force_login(superuser())
    form = {
        "slug": "vendor",
        "display_name": "Vendor",
        "tier": "3",
        "lifecycle": "experimental",
        "role": "web",  # part_of left blank: a service of its own
        "base_url": "https://vendor.example",
        "health_interval_seconds": "15",
        "dependencies-TOTAL_FORMS": "0",
        "dependencies-INITIAL_FORMS": "0",
        "instances-TOTAL_FORMS": "0",
        "instances-INITIAL_FORMS": "0",
        "_save": "Save",
    }

    for health_url, code in (
        ("http://169.254.169.254/latest/meta-data/", "health_url_blocked"),
        ("https://other.example/health", "health_url_foreign_host"),
        ("http://[::ffff:10.0.0.1]/", "health_url_blocked"),
    ):
        refused = client.post("/admin/catalog/service/add/", {**form, "health_url": health_url})
        assert refused.status_code == 200, code  # the form again, with the error
        errors = refused.context["adminform"].form.errors.as_data()["health_url"]
        assert [e.code for e in errors] == [code]
    assert not Service.objects.exists()

    accepted = client.post("/admin/catalog/service/add/", {**form, "health_url": "https://vendor.example/health"})
    assert accepted.status_code == 302, accepted.context["adminform"].form.errors.as_data()
    assert Service.objects.get(slug="vendor").health_url == "https://vendor.example/health"


def test_catalog_import_refuses_them_and_imports_nothing(tmp_path: Path, settings):
    settings.ATRIUM_OUTBOUND_ALLOW_NETWORKS = []
    path = tmp_path / "catalog.yaml"
    path.write_text(
        """
services:
  - slug: fine
    display_name: Fine
    base_url: https://fine.example
    health_url: https://fine.example/health
  - slug: metadata
    display_name: Metadata
    base_url: http://169.254.169.254
    health_url: http://169.254.169.254/latest/meta-data/iam/security-credentials/
  - slug: elsewhere
    display_name: Elsewhere
    health_url: https://elsewhere.example/health
""",
        encoding="utf-8",
    )

    with pytest.raises(CommandError) as refused:
        call_command("catalog_import", str(path), stdout=StringIO())

    message = str(refused.value)
    assert "nothing imported, 2 problem(s)" in message
    lines = message.splitlines()
    assert any(line.startswith("  services[1].health_url:") and "(health_url_blocked)" in line for line in lines)
    assert any(line.startswith("  services[2].health_url:") and "(health_url_foreign_host)" in line for line in lines)
    assert not Service.objects.exists()


def test_the_poller_never_requests_a_blocked_url_and_keeps_only_the_error_class(settings):
    # given health URLs stored before the rule (or written by hand) that point inside, and a listener there
    settings.ATRIUM_OUTBOUND_ALLOW_NETWORKS = []
    inside = LocalServer(lambda seen: (200, {}, b"internal secrets"))
    try:
        spellings = {
            "plain": f"http://127.0.0.1:{inside.port}/",
            "decimal": f"http://2130706433:{inside.port}/",
            "octal": f"http://0177.0.0.1:{inside.port}/",
            "hex": f"http://0x7f.0.0.1:{inside.port}/",
            "short": f"http://127.1:{inside.port}/",
            "mapped": f"http://[::ffff:127.0.0.1]:{inside.port}/",
            "localhost": f"http://localhost:{inside.port}/",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "userinfo": f"http://x@127.0.0.1:{inside.port}/",
        }
        for slug, url in spellings.items():
            Service.objects.create(slug=slug, display_name=slug, health_url=url)

        # when the poller runs
        counts = health_poll()
    finally:
        inside.stop()

    # then nothing reached the listener, and each check is critical with its class and nothing else
    assert inside.calls() == []
    assert counts["checked"] == len(spellings) == counts["critical"]
    checks = {c.service.slug: c for c in HealthCheck.objects.select_related("service")}
    assert {slug: (c.error, c.http_status, c.latency_ms) for slug, c in checks.items()} == {
        **{slug: ("blocked", None, None) for slug in spellings},
        "userinfo": ("invalid_url", None, None),
    }


def test_a_failing_health_url_keeps_its_status_code_never_its_body(settings, mint_token):
    settings.ATRIUM_OUTBOUND_ALLOW_NETWORKS = LOOPBACK
    secret = b"FATAL: password authentication failed for user atrium at 10.0.0.7:5432"
    failing = LocalServer(lambda seen: (503, {"Content-Type": "text/plain"}, secret))
    teapot = LocalServer(lambda seen: (418, {}, secret))
    try:
        Service.objects.create(slug="ledger", display_name="Ledger", health_url=f"{failing.url}/health/ready")
        Service.objects.create(slug="kettle", display_name="Kettle", health_url=f"{teapot.url}/health/ready")
        health_poll()
    finally:
        failing.stop()
        teapot.stop()

    stored = {c.service.slug: (c.status, c.http_status, c.error) for c in HealthCheck.objects.all()}
    assert stored == {"ledger": ("critical", 503, "status"), "kettle": ("warning", 418, "status")}
    reader = machine_client(audiences=["portal"], scopes=["portal:read"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {mint_token(reader, 'portal', scope='portal:read')}")
    (check,) = api.get(f"{URL}/ledger/health").json()["results"]
    assert (check["http_status"], check["error"]) == (503, "status")
    everything = json.dumps(list(HealthCheck.objects.values()), default=str) + json.dumps(check)
    assert "password" not in everything
    assert "10.0.0.7" not in everything


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_stored_details_into_classes_and_drops_every_body(migrations_restored):
    before, after = [("catalog", "0004_observed_calls")], [("catalog", "0005_health_check_error_class")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    service = old.get_model("catalog", "Service").objects.create(slug="ledger", display_name="Ledger")
    details = {
        "timed out": (None, "critical"),
        "<html>FATAL: password authentication failed for user atrium</html>": (503, "critical"),
        "Unauthorized: see https://10.0.0.7/login": (401, "warning"),
        "slow": (200, "warning"),
        "ConnectError: [Errno 111] Connection refused": (None, "critical"),
        "ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed": (None, "critical"),
        "ConnectError: [Errno -2] Name or service not known": (None, "critical"),
        "UnsupportedProtocol: Request URL is missing an 'http://' or 'https://' protocol.": (None, "critical"),
        "RemoteProtocolError: Server disconnected without sending a response.": (None, "critical"),
    }
    for detail, (code, status) in details.items():
        old.get_model("catalog", "HealthCheck").objects.create(
            service=service, status=status, http_status=code, detail=detail, checked_at=timezone.now()
        )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)

    with connection.cursor() as cursor:
        cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'catalog_health_check'")
        columns = {name for (name,) in cursor.fetchall()}
        cursor.execute("SELECT http_status, error FROM catalog_health_check ORDER BY id")
        classes = cursor.fetchall()
    assert "detail" not in columns
    assert classes == [
        (None, "timeout"),
        (503, "status"),
        (401, "status"),
        (200, ""),
        (None, "refused"),
        (None, "tls"),
        (None, "dns"),
        (None, "invalid_url"),
        (None, "connection"),
    ]
