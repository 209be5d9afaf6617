"""The dev runner's supervisor (devtools/supervisor.py) with real processes: restarts with backoff, prefixed output,
kills what a dead process leaves behind, stops everything on request. `make up` itself: tests/e2e/test_hostile.py §7.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from devtools.infra import REPO_ROOT
from devtools.supervisor import Backoff, ProcfileEntry, Supervisor, command_argv, exit_description, procfile_read
from tests.harness import wait_until

PY = sys.executable
FAST = Backoff(initial=0.2, maximum=0.8, reset_after=3.0)


class Console:
    """What the supervisor writes, line by line (it writes from several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text = ""

    def write(self, text: str) -> int:
        with self._lock:
            self._text += text
        return len(text)

    def flush(self) -> None:
        pass

    def lines(self, containing: str = "") -> list[str]:
        with self._lock:
            return [line for line in self._text.splitlines() if containing in line]


def python(code: str) -> str:
    """A Procfile command running ``code`` (one line, quoted as a Procfile line would quote it)."""
    return f'{PY} -u -c "{code}"'


@pytest.fixture
def run(tmp_path: Path):
    """Start a supervisor over the given entries; stopped (and checked stopped) at the end."""
    started: list[Supervisor] = []

    def start(entries: dict[str, str], **options: object) -> tuple[Supervisor, Console]:
        console = Console()
        options.setdefault("backoff", FAST)
        supervisor = Supervisor(
            [ProcfileEntry(n, c) for n, c in entries.items()],
            dict(os.environ),
            cwd=tmp_path,
            out=console,  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        )
        supervisor.start()
        started.append(supervisor)
        return supervisor, console

    yield start
    for supervisor in started:
        supervisor.stop()
        supervisor.stop()
        assert supervisor.wait(30)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ------------------------------------------------------------------------------------------- the Procfile


def test_the_procfile_names_every_atrium_process():
    names = [e.name for e in procfile_read(REPO_ROOT / "Procfile")]

    assert names == [
        "portal",
        "ledger",
        "payments",
        "webhooks",
        "risk",
        "worker_portal",
        "worker_audit",
        "worker_ledger",
        "worker_payments",
        "worker_webhooks",
        "relay_portal",
        "relay_ledger",
        "relay_payments",
        "relay_webhooks",
        "dispatcher_webhooks",
        "beat",
        "jobs_monitor",
    ]


@pytest.mark.parametrize(
    ("command", "env", "argv", "own"),
    [
        (
            "DJANGO_SETTINGS_MODULE=services.ledger.settings celery -A workers worker -Q ledger -n ledger@%h",
            {},
            ["celery", "-A", "workers", "worker", "-Q", "ledger", "-n", "ledger@%h"],
            {"DJANGO_SETTINGS_MODULE": "services.ledger.settings"},
        ),
        (
            "gunicorn portal.wsgi --bind ${BIND_HOST:-127.0.0.1}:${PORTAL_PORT:-8000}",
            {},
            ["gunicorn", "portal.wsgi", "--bind", "127.0.0.1:8000"],
            {},
        ),
        (
            "gunicorn portal.wsgi --bind ${BIND_HOST:-127.0.0.1}:${PORTAL_PORT:-8000}",
            {"BIND_HOST": "", "PORTAL_PORT": "9100"},  # set but empty takes the default, as in sh
            ["gunicorn", "portal.wsgi", "--bind", "127.0.0.1:9100"],
            {},
        ),
        (
            "beat --schedule ${ATRIUM_VAR_DIR:-var}/celerybeat-schedule",
            {"ATRIUM_VAR_DIR": "/tmp/x y"},
            ["beat", "--schedule", "/tmp/x", "y/celerybeat-schedule"],  # unquoted: split, as sh does
            {},
        ),
        ('echo "$GREETING, ${NAME}" A=1', {"GREETING": "hi", "NAME": "you"}, ["echo", "hi, you", "A=1"], {}),
        ("A=1 B=two env", {}, ["env"], {"A": "1", "B": "two"}),
        ("worker | tee log", {}, ["/bin/sh", "-c", "worker | tee log"], {}),
        ("one && two", {}, ["/bin/sh", "-c", "one && two"], {}),
    ],
)
def test_a_command_is_run_as_the_shell_would_run_it(command, env, argv, own):
    got_argv, got_env = command_argv(command, env)

    assert got_argv == argv
    assert {k: v for k, v in got_env.items() if k not in env} == own


@pytest.mark.parametrize("line", ["no colon here", "bad name!: cmd", "empty:   ", "a: x\na: y"])
def test_a_malformed_procfile_is_refused(tmp_path, line):
    (tmp_path / "Procfile").write_text(f"# comment\n\n{line}\n")

    with pytest.raises(ValueError, match="Procfile"):
        procfile_read(tmp_path / "Procfile")


def test_backoff_doubles_up_to_its_cap_and_starts_again_after_a_long_run():
    backoff = Backoff(initial=1, maximum=30, reset_after=30)
    delays: list[float] = []
    delay = None
    for _ in range(7):
        delay = backoff.delay(delay, uptime=2)
        delays.append(delay)

    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(30, uptime=31) == 1


def test_exits_are_described_by_code_or_signal():
    assert exit_description(3) == "exited with code 3"
    assert exit_description(0) == "exited with code 0"
    assert exit_description(-9) == "was killed by SIGKILL"
    assert exit_description(-15) == "was killed by SIGTERM"


# ------------------------------------------------------------------------------------------- supervision


def test_a_process_that_keeps_dying_is_restarted_with_growing_delays_and_the_others_keep_running(run):
    supervisor, console = run(
        {
            "steady": python("import time; print('steady up'); time.sleep(600)"),
            "crashy": python("import sys; print('crashing'); sys.exit(3)"),
        }
    )
    steady = wait_until(lambda: supervisor.pids().get("steady"), 10, "steady to start")

    # when crashy has died four times
    wait_until(lambda: len(console.lines("crashy (pid")) >= 4, 20, "four crashes")

    # then each death is one line naming it, its exit code and when it comes back, with the delay doubling to the cap
    exits = console.lines("crashy (pid")[:4]
    assert all(" atrium " in line and "exited with code 3" in line for line in exits), exits
    assert [line.rsplit("restarting it in ", 1)[1] for line in exits] == ["0.2 s", "0.4 s", "0.8 s", "0.8 s"]
    assert console.lines("crashy started again (restart 3)")
    # and its output, like the others', is prefixed with its name
    assert any(line.endswith("crashy | crashing") for line in console.lines())
    assert any(line.endswith("steady | steady up") for line in console.lines())
    # and the steady process was never touched
    assert supervisor.pids()["steady"] == steady
    assert len(console.lines("steady started")) == 1


def test_a_killed_process_is_restarted_and_what_it_left_behind_is_killed(run):
    # given a process that started a child of its own (as gunicorn starts workers)
    parent_code = (
        "import subprocess, time; child = subprocess.Popen(['sleep', '600']); "
        "print('child', child.pid, flush=True); time.sleep(600)"
    )
    supervisor, console = run({"parent": python(parent_code), "other": python("import time; time.sleep(600)")})
    first = wait_until(lambda: console.lines("parent | child "), 10, "the child's pid")[0]
    child = int(first.rsplit(" ", 1)[1])
    parent, other = supervisor.pids()["parent"], supervisor.pids()["other"]

    # when the parent is killed
    os.kill(parent, signal.SIGKILL)

    # then the console says so, its child is gone, and a new parent (with its own child) runs
    line = wait_until(lambda: console.lines(f"parent (pid {parent}) was killed by SIGKILL"), 10, "the kill line")[0]
    assert "restarting it in 0.2 s" in line
    wait_until(lambda: not alive(child), 5, "the orphaned child to be killed")
    wait_until(lambda: len(console.lines("parent | child ")) == 2, 10, "the new parent's child")
    assert supervisor.pids()["parent"] != parent
    assert supervisor.pids()["other"] == other


def test_stop_ends_every_process_and_kills_one_that_ignores_sigterm(run):
    supervisor, console = run(
        {
            "polite": python("import time; time.sleep(600)"),
            "stubborn": python(
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(600)"
            ),
        },
        stop_timeout=1.0,
    )
    wait_until(lambda: console.lines("stubborn | ready"), 10, "stubborn to start")
    pids = supervisor.pids()

    # when the runner is asked to stop
    started = time.monotonic()
    supervisor.stop()

    # then within the grace period (and a little) everything is gone, nothing restarted
    assert supervisor.wait(10)
    assert time.monotonic() - started < 5
    assert not [pid for pid in pids.values() if alive(pid)]
    assert console.lines("every process has stopped")
    assert not console.lines("restarting it")


def test_a_second_stop_does_not_wait_for_the_grace_period(run):
    supervisor, _console = run(
        {"stubborn": python("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)")},
        stop_timeout=60.0,
    )
    pid = wait_until(lambda: supervisor.pids().get("stubborn"), 10, "stubborn to start")

    supervisor.stop()
    time.sleep(0.5)
    supervisor.stop()  # a second Ctrl-C

    assert supervisor.wait(5)
    assert not alive(pid)


def test_a_program_that_cannot_start_is_retried_without_stopping_the_others(run):
    supervisor, console = run(
        {"ghost": "no-such-program-anywhere --flag", "fine": python("import time; time.sleep(600)")}
    )

    wait_until(lambda: len(console.lines("ghost could not start")) >= 2, 10, "two tries")
    assert "fine" in supervisor.pids()
