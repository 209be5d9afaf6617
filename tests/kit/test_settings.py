"""Production settings: every process passes ``check --deploy``, and refuses to start when misconfigured."""

from __future__ import annotations

import ast
import dataclasses
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from devtools.infra import REPO_ROOT, venv_env
from services.kit.conf import KitSettings
from tests.harness import MANAGE, current_test_database_url

SERVICES = ("portal", "ledger", "payments", "webhooks")
# Inherited settings that would make the subprocess judge this test run's configuration, not ours.
_INHERITED_PREFIXES = ("ATRIUM_", "DJANGO_", "JWT_", "CELERY_", "SECURE_", "PROMETHEUS_")
_INHERITED_NAMES = {
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "REDIS_URL",
    "TEST_DATABASE_NAME",
    "STATIC_ROOT",
    "LOG_LEVEL",
}


def production_env(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    """A complete production environment for every process; ``None`` removes a variable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_INHERITED_PREFIXES) and not k.endswith("DATABASE_URL") and k not in _INHERITED_NAMES
    }
    key_file = tmp_path / "jwt-signing.pem"
    if not key_file.exists():
        key_file.write_bytes(
            ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    oidc_key_file = tmp_path / "oidc-signing.pem"
    if not oidc_key_file.exists():
        oidc_key_file.write_bytes(
            rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    database_url = current_test_database_url()
    env.update(
        ATRIUM_ENV="production",
        SECRET_KEY="".join(secrets.choice(string.ascii_letters + string.digits + "!@#%^&*(-_=+)") for _ in range(64)),
        ALLOWED_HOSTS="atrium.example.com",
        LEDGER_DATABASE_URL=database_url,
        PORTAL_DATABASE_URL=database_url,
        PAYMENTS_DATABASE_URL=database_url,
        WEBHOOKS_DATABASE_URL=database_url,
        REDIS_URL="redis://:password@127.0.0.1:6379/0",
        JWT_JWKS_URL="https://portal.example.com/.well-known/jwks.json",
        JWT_PRIVATE_KEY_FILE=str(key_file),
        OIDC_PRIVATE_KEY_FILE=str(oidc_key_file),
        ATRIUM_SSO_URL="https://portal.example.com",
        LEDGER_OIDC_CLIENT_ID="ledger-admin",
        LEDGER_OIDC_CLIENT_SECRET="ledger-admin-secret",
        PAYMENTS_OIDC_CLIENT_ID="payments-admin",
        PAYMENTS_OIDC_CLIENT_SECRET="payments-admin-secret",
        WEBHOOKS_OIDC_CLIENT_ID="webhooks-admin",
        WEBHOOKS_OIDC_CLIENT_SECRET="webhooks-admin-secret",
        WEBHOOKS_SECRET_KEYS="Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtb2Yta2V5ISE=",
        ATRIUM_VAR_DIR=str(tmp_path / "var"),
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return venv_env(env)


def manage(service: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, MANAGE[service], *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("service", SERVICES)
def test_production_configuration_passes_the_deploy_check(tmp_path, service):
    # given a complete production environment
    env = production_env(tmp_path)

    # when Django's deployment checklist runs, failing on warnings
    result = manage(service, "check", "--deploy", "--fail-level", "WARNING", env=env)

    # then it finds nothing to complain about
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY is required when ATRIUM_ENV=production"),
        ({"SECRET_KEY": ""}, "SECRET_KEY is required when ATRIUM_ENV=production"),
        ({"DEBUG": "true"}, "DEBUG must be off when ATRIUM_ENV=production"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS is required when ATRIUM_ENV=production"),
        ({"REDIS_URL": None}, "Set REDIS_URL"),
        ({"LEDGER_DATABASE_URL": None}, "Set LEDGER_DATABASE_URL or DATABASE_URL"),
        ({"LEDGER_DATABASE_URL": "sqlite:///ledger.db"}, "must be a PostgreSQL URL"),
        ({"ATRIUM_ENV": "staging"}, "ATRIUM_ENV must be one of"),
    ],
    ids=[
        "no-secret-key",
        "empty-secret-key",
        "debug-on",
        "no-allowed-hosts",
        "no-redis",
        "no-database",
        "not-postgresql",
        "unknown-env",
    ],
)
def test_misconfigured_production_refuses_to_start(tmp_path, overrides, message):
    # given a production environment with one thing wrong
    env = production_env(tmp_path, **overrides)

    # when the ledger is started (any management command loads the settings)
    result = manage("ledger", "check", env=env)

    # then it stops with a message naming what to fix
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


@pytest.mark.django_db
def test_portal_in_production_without_a_signing_key_fails_its_checks(tmp_path):
    # given the portal in production with no JWT private key configured
    env = production_env(tmp_path, JWT_PRIVATE_KEY_FILE=None, JWT_PRIVATE_KEY=None)

    # when its checks run
    result = manage("portal", "check", "--deploy", env=env)

    # then the identity check refuses, and no dev key was generated in its place
    assert result.returncode != 0
    assert "identity.E001" in result.stderr
    assert "JWT_PRIVATE_KEY" in result.stderr
    assert not (tmp_path / "var" / "keys").exists()


def test_portal_in_production_without_an_id_token_key_fails_its_checks(tmp_path):
    # given the portal in production with no key for people's ID tokens
    env = production_env(tmp_path, OIDC_PRIVATE_KEY_FILE=None, OIDC_PRIVATE_KEY=None)

    # when its checks run
    result = manage("portal", "check", "--deploy", env=env)

    # then the identity check refuses, naming the settings, and no dev key was generated in its place
    assert result.returncode != 0
    assert "identity.E002" in result.stderr
    assert "OIDC_PRIVATE_KEY" in result.stderr
    assert not (tmp_path / "var" / "keys").exists()


def test_portal_refuses_an_id_token_key_that_is_not_rsa(tmp_path):
    # given an Ed25519 key where RS256 needs an RSA one
    env = production_env(tmp_path, OIDC_PRIVATE_KEY_FILE=str(tmp_path / "jwt-signing.pem"))

    # when the portal starts
    result = manage("portal", "check", "--deploy", env=env)

    # then it refuses, saying what the key must be
    assert result.returncode != 0
    assert "OIDC_PRIVATE_KEY must be an RSA private key of at least 2048 bits" in result.stderr


@pytest.mark.parametrize("service", ["ledger", "payments", "webhooks"])
@pytest.mark.parametrize("missing", ["client", "https"])
def test_service_admin_without_sign_in_through_the_portal_warns_in_production(tmp_path, service, missing):
    # given a service in production whose admin has no client at the portal, or reaches it without TLS
    overrides = (
        {f"{service.upper()}_OIDC_CLIENT_ID": None}
        if missing == "client"
        else {"ATRIUM_SSO_URL": "http://portal.example.com"}
    )
    env = production_env(tmp_path, **overrides)

    # when the deployment checks run
    result = manage(service, "check", "--deploy", "--fail-level", "WARNING", env=env)

    # then they warn that only break-glass accounts could log in
    assert result.returncode != 0
    assert "atrium.W010" in result.stderr


@pytest.mark.django_db
def test_service_in_production_without_jwks_url_fails_the_deploy_check(tmp_path):
    # given the ledger in production with nowhere to fetch token keys from
    env = production_env(tmp_path, JWT_JWKS_URL=None)

    # when the deployment checks run
    result = manage("ledger", "check", "--deploy", env=env)

    # then it is an error naming the setting
    assert result.returncode != 0
    assert "atrium.E003" in result.stderr
    assert "JWT_JWKS_URL" in result.stderr


@pytest.mark.django_db
def test_redis_broker_without_password_is_a_deploy_warning(tmp_path):
    # given the ledger in production with a password-less Redis
    env = production_env(tmp_path, REDIS_URL="redis://127.0.0.1:6379/0")

    # when the deployment checks run, failing on warnings
    result = manage("ledger", "check", "--deploy", "--fail-level", "WARNING", env=env)

    # then the warning names the problem
    assert result.returncode != 0
    assert "atrium.W001" in result.stderr


SETTINGS_MODULES = {
    "portal": REPO_ROOT / "portal" / "settings.py",
    "ledger": REPO_ROOT / "services" / "ledger" / "settings.py",
    "payments": REPO_ROOT / "services" / "payments" / "settings.py",
    "webhooks": REPO_ROOT / "services" / "webhooks" / "settings.py",
}


def _assigned_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_every_settings_module_names_every_shared_setting(service):
    # given the settings every process shares, as the kit declares them
    shared = {field.name for field in dataclasses.fields(KitSettings)}

    # when a service's settings module is read
    assigned = _assigned_names(SETTINGS_MODULES[service])

    # then it assigns each of them by name (its own value or the kit's), none hidden from grep and linters
    assert shared - assigned == set()
