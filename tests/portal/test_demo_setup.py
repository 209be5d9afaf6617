"""``manage.py demo_setup``: idempotent demo admin and all-audience demo client, credentials on disk."""

from __future__ import annotations

import json
import stat
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from portal.identity.models import MachineClient
from tests.portal.factories import all_audiences, all_scopes

pytestmark = pytest.mark.django_db


@pytest.fixture
def credentials(tmp_path):
    return tmp_path / "state" / "dev-credentials.json"


def _demo_setup(path) -> dict:
    call_command("demo_setup", credentials=str(path), url=["portal=http://x"], stdout=StringIO())
    return json.loads(path.read_text())


def _token_status(request_token, saved: dict, audience: str = "portal") -> int:
    body = {"grant_type": "client_credentials", **saved["client"], "audience": audience}
    return request_token(body).status_code


def test_first_run_creates_the_admin_and_an_all_audience_client(credentials, request_token):
    # when demo_setup runs on an empty database
    saved = _demo_setup(credentials)

    # then the credentials file (owner-only) names a superuser and a client with every audience and scope
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert saved["urls"] == {"portal": "http://x"}
    assert saved["admin"]["username"] == "admin"
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser
    assert admin.is_staff
    assert admin.check_password(saved["admin"]["password"])
    client = MachineClient.objects.get(name="demo-client")
    assert saved["client"]["client_id"] == client.id
    assert client.allowed_audiences == sorted(all_audiences())
    assert client.allowed_scopes == all_scopes()
    assert client.is_active
    # and the client's secret works for every audience
    for audience in all_audiences():
        assert _token_status(request_token, saved, audience) == 200, audience


def test_second_run_changes_nothing(credentials, request_token):
    # given a first run
    first = _demo_setup(credentials)
    hash_before = MachineClient.objects.get(name="demo-client").secret_hash

    # when it runs again with the file in place
    second = _demo_setup(credentials)

    # then the same client, secret and password are kept, and the secret still works
    assert second == first
    assert MachineClient.objects.filter(name="demo-client").count() == 1
    assert get_user_model().objects.filter(username="admin").count() == 1
    client = MachineClient.objects.get(name="demo-client")
    assert client.secret_hash == hash_before
    assert client.secret_rotated_at is None
    assert _token_status(request_token, second) == 200


def test_rerun_without_the_file_rotates_the_secret_and_writes_a_working_one(credentials, request_token):
    # given a first run whose credentials file was then lost
    first = _demo_setup(credentials)
    credentials.unlink()

    # when demo_setup runs again
    second = _demo_setup(credentials)

    # then the same client got a new secret, which works while the old one does not
    assert second["client"]["client_id"] == first["client"]["client_id"]
    assert second["client"]["client_secret"] != first["client"]["client_secret"]
    assert MachineClient.objects.get(name="demo-client").secret_rotated_at is not None
    assert _token_status(request_token, second) == 200
    assert _token_status(request_token, first) == 401
    # and the admin's new password is the one written down
    assert get_user_model().objects.get(username="admin").check_password(second["admin"]["password"])


def test_rerun_reactivates_a_revoked_demo_client(credentials, request_token):
    saved = _demo_setup(credentials)
    client = MachineClient.objects.get(name="demo-client")
    MachineClient.objects.filter(pk=client.pk).update(is_active=False, revoked_at=client.created_at)
    assert _token_status(request_token, saved) == 401

    again = _demo_setup(credentials)

    assert again == saved
    assert _token_status(request_token, again) == 200


def test_refuses_to_run_in_production(credentials, settings):
    # given a production environment
    settings.ATRIUM_ENV = "production"

    # then no well-known demo credentials are created
    with pytest.raises(CommandError, match="refuses to run in production"):
        _demo_setup(credentials)
    assert not credentials.exists()
    assert not get_user_model().objects.filter(username="admin").exists()
    assert not MachineClient.objects.filter(name="demo-client").exists()


def test_each_service_gets_its_own_least_privilege_client(credentials, request_token):
    saved = _demo_setup(credentials)

    assert sorted(saved["services"]) == ["ledger", "payments", "portal", "risk", "webhooks"]
    payments = saved["services"]["payments"]
    client = MachineClient.objects.get(id=payments["client_id"])
    assert client.name == "payments-service"
    assert (client.allowed_audiences, client.allowed_scopes) == (
        ["ledger", "portal", "risk"],
        ["catalog:register", "ledger:read", "ledger:write", "risk:assess"],
    )
    body = {"grant_type": "client_credentials", **payments}
    assert request_token({**body, "audience": "ledger"}).status_code == 200
    assert request_token({**body, "audience": "payments"}).status_code != 200
    # the ledger may only register itself in the catalog
    ledger = MachineClient.objects.get(id=saved["services"]["ledger"]["client_id"])
    assert (ledger.name, ledger.allowed_audiences, ledger.allowed_scopes) == (
        "ledger-service",
        ["portal"],
        ["catalog:register"],
    )
    body = {"grant_type": "client_credentials", **saved["services"]["ledger"]}
    assert request_token({**body, "audience": "portal"}).status_code == 200
    assert request_token({**body, "audience": "ledger"}).status_code != 200
    # so may the webhooks service (it calls no other service: events reach it through the outboxes)
    webhooks = MachineClient.objects.get(id=saved["services"]["webhooks"]["client_id"])
    assert (webhooks.name, webhooks.allowed_audiences, webhooks.allowed_scopes) == (
        "webhooks-service",
        ["portal"],
        ["catalog:register"],
    )
    body = {"grant_type": "client_credentials", **saved["services"]["webhooks"]}
    assert request_token({**body, "audience": "portal"}).status_code == 200
    assert request_token({**body, "audience": "webhooks"}).status_code != 200
    # the portal registers itself, reads the payments stats for its home and a payment's webhook messages for the
    # trace; it cannot write payments or webhooks
    portal = MachineClient.objects.get(id=saved["services"]["portal"]["client_id"])
    assert (portal.name, portal.allowed_audiences, portal.allowed_scopes) == (
        "portal-service",
        ["payments", "portal", "webhooks"],
        ["catalog:register", "payments:read", "webhooks:read"],
    )
    body = {"grant_type": "client_credentials", **saved["services"]["portal"]}
    assert request_token({**body, "audience": "portal"}).status_code == 200
    assert request_token({**body, "audience": "payments"}).status_code == 200
    assert request_token({**body, "audience": "webhooks"}).status_code == 200
    assert request_token({**body, "audience": "payments", "scope": "payments:write"}).status_code != 200
    assert request_token({**body, "audience": "webhooks", "scope": "webhooks:write"}).status_code != 200
    assert request_token({**body, "audience": "ledger"}).status_code != 200
    # payments asks the risk service to assess payments, and no more of it
    body = {"grant_type": "client_credentials", **payments}
    assert request_token({**body, "audience": "risk", "scope": "risk:assess"}).status_code == 200
    assert request_token({**body, "audience": "risk", "scope": "risk:write"}).status_code != 200
    # the risk service (Node) registers itself and sends its audit events over HTTP; it calls nothing else
    risk = MachineClient.objects.get(id=saved["services"]["risk"]["client_id"])
    assert (risk.name, risk.allowed_audiences, risk.allowed_scopes) == (
        "risk-service",
        ["portal"],
        ["audit:ingest", "catalog:register"],
    )
    body = {"grant_type": "client_credentials", **saved["services"]["risk"]}
    assert request_token({**body, "audience": "portal", "scope": "catalog:register audit:ingest"}).status_code == 200
    assert request_token({**body, "audience": "portal", "scope": "audit:read"}).status_code != 200
    assert request_token({**body, "audience": "payments"}).status_code != 200
    # a second run keeps them
    assert _demo_setup(credentials)["services"] == saved["services"]


def test_each_service_admin_gets_a_sign_in_client_that_survives_a_rerun(tmp_path):
    from django.contrib.auth.hashers import check_password
    from oauth2_provider.models import get_application_model

    path = tmp_path / "dev-credentials.json"
    urls = [
        "portal=http://127.0.0.1:8000",
        "ledger=http://127.0.0.1:8001",
        "payments=http://127.0.0.1:8002",
        "webhooks=http://127.0.0.1:8003",
    ]

    # given a first run
    call_command("demo_setup", credentials=str(path), url=urls, stdout=StringIO())
    first = json.loads(path.read_text())["sso"]

    # then each service admin has a confidential code-flow client at the portal, redirecting to its callback
    assert set(first) == {"ledger", "payments", "webhooks"}
    Application = get_application_model()
    payments = Application.objects.get(client_id=first["payments"]["client_id"])
    assert payments.redirect_uris == "http://127.0.0.1:8002/oidc/callback"
    assert payments.authorization_grant_type == Application.GRANT_AUTHORIZATION_CODE
    assert payments.algorithm == Application.RS256_ALGORITHM
    assert check_password(first["payments"]["client_secret"], payments.client_secret)
    webhooks = Application.objects.get(client_id=first["webhooks"]["client_id"])
    assert webhooks.redirect_uris == "http://127.0.0.1:8003/oidc/callback"

    # and a second run keeps the same clients and secrets
    call_command("demo_setup", credentials=str(path), url=urls, stdout=StringIO())
    assert json.loads(path.read_text())["sso"] == first
    assert Application.objects.count() == 3
