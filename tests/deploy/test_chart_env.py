"""The chart's environment is complete: each process, given exactly what its rendered pod would get (the ConfigMap,
the existing Secret, the container's own env with kubelet's ``$(VAR)`` expansion), passes Django's deployment
checklist and the kit's production checks. The one deliberate warning is ``security.W008``: TLS ends at the
Ingress, and the services call each other over plain HTTP inside the cluster, so Django does not redirect to HTTPS.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.conf import settings

from devtools.chart import render
from devtools.infra import REPO_ROOT, free_port, venv_env
from tests.harness import MANAGE, AtriumProcess, current_test_database_url, wait_until

POD_IP = "10.244.3.17"
# What the operator's Secret (existingSecret) holds: nothing of it is in the chart.
_SECRET_NAMES = (
    "SECRET_KEY",
    "REDIS_URL",
    "JWT_PRIVATE_KEY",
    "OIDC_PRIVATE_KEY",
    "AUDIT_SIGNING_KEY",
    "WEBHOOKS_SECRET_KEYS",
)
# Variables of this test run that would make the subprocess judge our configuration instead of the chart's.
_INHERITED = re.compile(r"^(ATRIUM_|DJANGO_|JWT_|CELERY_|SECURE_|OIDC_|AUDIT_|WEB_)|DATABASE_URL$|_URL$")
_INHERITED_NAMES = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "TEST_DATABASE_NAME", "STATIC_ROOT", "LOG_LEVEL"}
_KEY_ALPHABET = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
CHECK_ID = re.compile(r"\(([a-z_]+\.[EW]\d{3})\)")


def _pem(private_key: Any) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def operator_secret() -> dict[str, str]:
    """A complete existingSecret, as docs/deploy.md lists it (databases: this test run's database)."""
    database_url = current_test_database_url()
    secret = {
        "SECRET_KEY": "".join(secrets.choice(_KEY_ALPHABET) for _ in range(64)),
        "REDIS_URL": "redis://:a-redis-password@redis-master.redis.svc:6379/0",
        "JWT_PRIVATE_KEY": _pem(ed25519.Ed25519PrivateKey.generate()),
        "OIDC_PRIVATE_KEY": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "AUDIT_SIGNING_KEY": _pem(ed25519.Ed25519PrivateKey.generate()),
        "WEBHOOKS_SECRET_KEYS": "Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtb2Yta2V5ISE=",
    }
    for service in MANAGE:
        secret[f"{service.upper()}_DATABASE_URL"] = database_url
        secret[f"{service.upper()}_CLIENT_ID"] = f"svc_{service}"  # its machine identity at the portal
        secret[f"{service.upper()}_CLIENT_SECRET"] = secrets.token_urlsafe(32)
        if service != "portal":
            secret[f"{service.upper()}_OIDC_CLIENT_ID"] = f"{service}-admin"
            secret[f"{service.upper()}_OIDC_CLIENT_SECRET"] = f"{service}-admin-secret"
    assert set(_SECRET_NAMES) <= set(secret)
    return secret


def container_environment(manifests: list[dict[str, Any]], kind: str, name: str, secret: dict[str, str]) -> dict:
    """The environment kubelet gives the workload's container: envFrom (ConfigMaps, the Secret) in order, then env,
    each ``$(VAR)`` expanded from what is defined before it; ``status.podIP`` is ``POD_IP``."""
    (workload,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    config_maps = {m["metadata"]["name"]: m.get("data") or {} for m in manifests if m["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
        else:
            env.update(secret)
    for variable in container.get("env") or []:
        if "value" in variable:
            env[variable["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), variable["value"])
        else:
            assert variable["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}, variable
            env[variable["name"]] = POD_IP
    return env


def deploy_check(service: str, environment: dict[str, str], var_dir: Path) -> tuple[int, set[str], str]:
    """``manage <service> check --deploy --fail-level WARNING`` in exactly ``environment``: (exit code, check ids
    reported, output)."""
    env = {k: v for k, v in os.environ.items() if not _INHERITED.search(k) and k not in _INHERITED_NAMES}
    env.update(environment, ATRIUM_VAR_DIR=str(var_dir))
    result = subprocess.run(
        [sys.executable, MANAGE[service], "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=venv_env(env),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = result.stdout + result.stderr
    return result.returncode, set(CHECK_ID.findall(output)), output


INGRESS = {"ingress": {"enabled": True, "host": "atrium.example.com", "tls": [{"secretName": "atrium-tls"}]}}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "name", "service"),
    [
        ("Deployment", "atrium-portal", "portal"),
        ("Deployment", "atrium-ledger", "ledger"),
        ("Deployment", "atrium-payments", "payments"),
        ("Deployment", "atrium-webhooks", "webhooks"),
        ("Deployment", "atrium-worker-payments", "payments"),
        ("Job", "atrium-migrate-webhooks", "webhooks"),
    ],
)
def test_each_process_passes_the_deploy_checklist_with_the_charts_environment(tmp_path, kind, name, service):
    # given the chart rendered with an Ingress, and the environment that workload's container gets
    manifests = render(INGRESS)
    environment = container_environment(manifests, kind, name, operator_secret())

    # when the service's deployment checklist runs on it, failing on warnings
    code, ids, output = deploy_check(service, environment, tmp_path)

    # then nothing is missing or wrong but the deliberate plain-HTTP hop inside the cluster
    assert ids == {"security.W008"}, output
    assert code != 0  # W008 is a warning, and warnings fail at this level: the check really ran
    assert environment["ATRIUM_ENV"] == "production"
    if kind == "Deployment" and not name.startswith("atrium-worker"):
        assert environment["ALLOWED_HOSTS"].startswith(f"{POD_IP},")


@pytest.mark.django_db
def test_without_an_ingress_the_admins_sign_in_warns_that_it_has_no_https_portal(tmp_path):
    # given the chart's defaults (no Ingress: the portal has no public HTTPS URL for browsers to sign in at)
    manifests = render()
    environment = container_environment(manifests, "Deployment", "atrium-ledger", operator_secret())

    # when the ledger's deployment checklist runs
    code, ids, output = deploy_check("ledger", environment, tmp_path)

    # then the sign-in warning joins the plain-HTTP one, and nothing else
    assert ids == {"security.W008", "atrium.W010"}, output
    assert code != 0


@pytest.mark.django_db
def test_a_missing_secret_value_fails_the_check(tmp_path):
    # given the payments pod's environment from a Secret that lacks REDIS_URL
    manifests = render(INGRESS)
    secret = operator_secret()
    del secret["REDIS_URL"]
    environment = container_environment(manifests, "Deployment", "atrium-payments", secret)

    # when the deployment checklist runs
    code, ids, output = deploy_check("payments", environment, tmp_path)

    # then the process refuses to start, naming the variable: the chart cannot hide a missing secret
    assert code != 0
    assert "Set REDIS_URL" in output
    assert not ids  # it stopped at the settings, before any check ran


def procfile_command(name: str) -> str:
    """The Procfile line called ``name`` (what the image's entrypoint runs for ``args: [name]``)."""
    for line in (REPO_ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Procfile line {name}")


@pytest.mark.django_db
def test_a_web_pod_answers_probes_by_pod_ip_and_in_cluster_calls_by_service_name(harness, tmp_path):
    # given the ledger's Procfile process running with exactly its pod's environment (its pod IP is loopback here,
    # its port a free one, its database a fresh migrated one, the broker this test run's Redis)
    manifests = render(INGRESS)
    secret = {**operator_secret(), "LEDGER_DATABASE_URL": harness.service_database("ledger")}
    environment = container_environment(manifests, "Deployment", "atrium-ledger", secret)
    port = free_port()
    environment.update(BIND_HOST="127.0.0.1", LEDGER_PORT=str(port), REDIS_URL=settings.REDIS_URL)
    environment["ALLOWED_HOSTS"] = environment["ALLOWED_HOSTS"].replace(POD_IP, "127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not _INHERITED.search(k) and k not in _INHERITED_NAMES}
    env.update(environment, ATRIUM_VAR_DIR=str(tmp_path))
    ledger = AtriumProcess(
        name="ledger-pod",
        cmd=["/bin/sh", "-c", f"exec env {procfile_command('ledger')}"],
        env=venv_env(env),
        log_path=tmp_path / "ledger-pod.log",
        url=f"http://127.0.0.1:{port}",
    )
    harness.processes.append(ledger)
    ledger.start()

    # when kubelet probes it (Host: the pod's IP), Prometheus scrapes it, and payments calls it by its Service name
    wait_until(lambda: _status(ledger.url, "/health/live") == 200, 60, "the ledger's liveness")
    ready = _status(ledger.url, "/health/ready")
    metrics = _status(ledger.url, "/metrics")
    in_cluster = _status(ledger.url, "/api/v1/accounts", host=f"atrium-ledger.atrium.svc:{port}")
    stranger = _status(ledger.url, "/api/v1/accounts", host="ledger.attacker.example")

    # then the probes and the scrape pass, the in-cluster call reaches the API in plain HTTP (asks for a token, no
    # redirect to HTTPS), and a host the chart did not name is refused
    assert (ready, metrics) == (200, 200), ledger.output()[-3000:]
    assert in_cluster == 401, ledger.output()[-3000:]
    assert stranger == 400


def _status(base_url: str, path: str, host: str | None = None) -> int | None:
    headers = {"Host": host} if host else {}
    try:
        return httpx.get(f"{base_url}{path}", headers=headers, timeout=5, follow_redirects=False).status_code
    except httpx.HTTPError:
        return None
