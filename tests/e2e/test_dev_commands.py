"""``./bin/atrium manage`` and ``./bin/atrium status`` from a clean clone of the repository (the shared .venv
linked in), with ``make up`` stopped and with it running, and ``make up``'s check of its ports. Each run uses a
var directory and a port base of its own, so it never meets a developer's running copy."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from devtools.infra import REPO_ROOT, free_port, venv_env
from devtools.ports import port_taken
from tests.harness import wait_until


def port_base() -> int:
    """A port whose next four are free too (portal, ledger, payments, webhooks, risk), and the demo webhook
    receiver's (base + 9)."""
    for _ in range(50):
        base = free_port()
        if base < 65000 and not any(port_taken(base + n) for n in (0, 1, 2, 3, 4, 9)):
            return base
    raise AssertionError("no free port base (base to base + 4, and base + 9)")


def dev_env(var_dir: Path, base: int) -> dict[str, str]:
    """This environment without the test run's servers and settings, pointed at ``var_dir`` and ``base``."""
    env = venv_env(dict(os.environ))
    for name in list(env):
        if name.endswith(("DATABASE_URL", "_PORT")) or name in ("REDIS_URL", "DJANGO_SETTINGS_MODULE", "ATRIUM_ENV"):
            env.pop(name)
    env.update(
        ATRIUM_VAR_DIR=str(var_dir),
        ATRIUM_PORT_BASE=str(base),
        WEB_CONCURRENCY="1",
        CELERY_WORKER_CONCURRENCY="1",
    )
    return env


def atrium(
    clone: Path, env: dict[str, str], *args: str, timeout: float = 240, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["./bin/atrium", *args],
        cwd=clone,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def servers_of(var_dir: Path) -> list[psutil.Process]:
    """Embedded servers still running on ``var_dir``: PostgreSQL by its data directory, Redis by its working one."""
    found = []
    for process in psutil.process_iter(["cmdline", "name"]):
        with contextlib.suppress(psutil.Error):
            if str(var_dir) in " ".join(process.info["cmdline"] or []) or (
                "redis" in (process.info["name"] or "") and str(var_dir) in process.cwd()
            ):
                found.append(process)
    return found


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``git clone`` of this repository with the shared virtualenv linked in."""
    root = tmp_path_factory.mktemp("clone") / "atrium"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(root)], check=True, timeout=120)
    (root / ".venv").symlink_to((REPO_ROOT / ".venv").resolve())
    return root


def test_manage_and_status_work_when_make_up_is_stopped(clone: Path, tmp_path: Path):
    # given a clean clone where make up has never run
    var_dir = tmp_path / "var"
    env = dev_env(var_dir, port_base())

    # when status is asked, then it says make up is not running
    status = atrium(clone, env, "status")
    assert status.returncode == 3, status.stdout + status.stderr
    assert status.stdout.startswith("make up: not running")
    assert "not running (embedded, data in" in status.stdout

    # when a command needs tables that are not there yet, then it is refused with one line saying what to run
    early = atrium(clone, env, "manage", "portal", "audit_verify")
    assert early.returncode == 2, early.stdout + early.stderr
    assert early.stderr.splitlines()[-1] == (
        "atrium manage: portal: its database is not migrated yet; run `./bin/atrium manage portal migrate` "
        "(or `make up` once) first"
    )
    assert "Traceback" not in early.stderr

    # when the portal's database is migrated and verified through manage
    migrated = atrium(clone, env, "manage", "portal", "migrate", "--noinput", "-v", "0")
    verified = atrium(clone, env, "manage", "portal", "audit_verify")
    # and psql is opened on the ledger's database
    psql = atrium(clone, env, "manage", "ledger", "dbshell", stdin="SELECT current_database();\n")

    # then each ran on the embedded servers manage started, which are gone again
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert "`make up` is not running; starting the servers" in migrated.stderr
    assert verified.returncode == 0, verified.stderr[-3000:]
    assert verified.stdout.strip().endswith("OK")
    assert psql.returncode == 0, psql.stderr[-3000:]
    assert " atrium_ledger\n" in psql.stdout
    assert servers_of(var_dir) == []


def test_manage_names_the_processes_it_knows():
    done = subprocess.run(
        [sys.executable, "-m", "devtools", "manage", "wallet", "check"],
        cwd=REPO_ROOT,
        env=venv_env(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert "unknown process 'wallet' (one of: portal, ledger, payments, webhooks, risk)" in done.stderr


def test_manage_refuses_a_node_service_s_non_migrate_command_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "devtools", "manage", "risk", "shell"],
        cwd=REPO_ROOT,
        env=venv_env(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.startswith("atrium manage: risk is a node service (services/risk), not Django: its one command")
    assert "Traceback" not in done.stderr


def test_make_up_on_a_taken_port_stops_at_once_with_one_line_naming_it(tmp_path: Path):
    # given something already listening on what would be the ledger's port
    base = port_base()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", base + 1))
        squatter.listen()

        # when make up starts
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "devtools", "up"],
            cwd=REPO_ROOT,
            env=dev_env(tmp_path / "var", base),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # then it stops before starting anything, in one line naming the port and who holds it
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    assert done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.startswith("atrium:")]
    assert lines == [
        f"atrium: port {base + 1} is in use — is another `make up` running? (pid {os.getpid()}: "
        f"{' '.join(psutil.Process().cmdline())[:120]})"
    ]
    assert not (tmp_path / "var").exists()


@pytest.mark.slow
def test_manage_and_status_use_a_running_make_up_and_a_second_one_is_refused(clone: Path, tmp_path: Path):
    # given make up running in the clean clone
    var_dir = tmp_path / "var"
    base = port_base()
    env = dev_env(var_dir, base)
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        runner = subprocess.Popen(
            ["./bin/atrium", "up"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def up() -> bool:
            assert runner.poll() is None, log_path.read_text(errors="replace")[-4000:]
            return "Atrium is up." in log_path.read_text(errors="replace")

        wait_until(up, 240, "make up's banner", every=1)
        console = log_path.read_text(errors="replace")
        redis_url = next(line.split()[1] for line in console.splitlines() if line.startswith("  redis "))

        # when status is asked, then every process runs, the web ones answer, and the servers are named
        status = atrium(clone, env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.startswith(f"make up: running (pid {runner.pid}")
        for name in ("portal", "ledger", "payments"):
            assert any(line.split()[0] == name and line.endswith("ready") for line in status.stdout.splitlines())
        assert "down" not in status.stdout
        assert f"http://127.0.0.1:{base}/admin/" in status.stdout
        assert f"postgresql://postgres@/atrium_portal?host={var_dir}/dev/postgres" in status.stdout
        assert redis_url in status.stdout

        # when a management command runs, then it uses make up's servers (starting none of its own)
        verified = atrium(clone, env, "manage", "portal", "audit_verify")
        assert verified.returncode == 0, verified.stderr[-3000:]
        assert verified.stdout.strip().endswith("OK")
        assert "not running" not in verified.stderr

        # when a second make up starts on the same ports (another var directory), or from the same directory
        other = atrium(clone, dev_env(tmp_path / "other", base), "up", timeout=60)
        again = atrium(clone, env, "up", timeout=60)

        # then each stops at once with one line, and the running one is left as it was
        assert other.returncode == 1
        assert f"atrium: port {base} is in use — is another `make up` running? (pid " in other.stderr
        assert not (tmp_path / "other").exists()
        assert again.returncode == 1
        assert f"atrium: `make up` is already running from {var_dir} (pid {runner.pid})" in again.stderr
        assert runner.poll() is None
        assert log_path.read_text(errors="replace").count("Atrium is up.") == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGINT)
        runner.wait(90)

    # when make up has stopped, then status says so again
    assert atrium(clone, env, "status").stdout.startswith("make up: not running")


def test_a_record_left_by_a_runner_that_was_killed_does_not_count_as_running(tmp_path: Path):
    # given var/dev/up.json naming a pid that is no dev runner (this test's own)
    var_dir = tmp_path / "var"
    (var_dir / "dev").mkdir(parents=True)
    (var_dir / "dev" / "up.json").write_text(f'{{"pid": {os.getpid()}, "urls": {{}}}}')

    # when status is asked
    done = subprocess.run(
        [sys.executable, "-m", "devtools", "status"],
        cwd=REPO_ROOT,
        env=dev_env(var_dir, port_base()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then make up is not running
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("make up: not running")
