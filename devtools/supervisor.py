"""The dev runner's process supervisor: every ``Procfile`` process, restarted when it exits unexpectedly.

What honcho did for ``make up`` — one line per process in the ``Procfile``, its output prefixed with its name —
except that a process that dies is restarted instead of taking every other one down with it, as Compose's
``restart: unless-stopped`` does: after 1 s, doubling up to 30 s while it keeps failing, back to 1 s once it has
stayed up 30 s; each exit and restart is one console line naming the process, its exit code or signal and when it
comes back. :meth:`Supervisor.stop` (the runner's Ctrl-C or SIGTERM) stops them all: SIGTERM to each process
group, SIGKILL after a grace period; a second stop kills at once.

Each process runs in a session (process group) of its own: a Ctrl-C in the terminal reaches only the runner, and
whatever a dead process leaves behind (gunicorn's workers, Celery's pool) is killed with it, so that the new one can
bind its port and nothing runs twice.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_VARIABLE = re.compile(r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)")
_OPERATORS = frozenset("|&;<>()")


@dataclass(frozen=True)
class ProcfileEntry:
    name: str
    command: str


def procfile_read(path: Path) -> list[ProcfileEntry]:
    """The ``name: command`` lines of a Procfile (comments and blank lines skipped)."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, command = stripped.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name.strip()) or not command.strip():
            raise ValueError(f"{path}:{number}: expected 'name: command', got {line!r}")
        entries.append(ProcfileEntry(name.strip(), command.strip()))
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate process names")
    return entries


def _expand(text: str, env: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        found = env.get(name, "")
        if match.group("default") is not None and not found:
            return match.group("default")
        return found

    return _VARIABLE.sub(value, text)


def _needs_shell(command: str) -> bool:
    """Whether the command uses shell syntax beyond words and variables: an operator outside quotes, or a
    command substitution anywhere."""
    if "`" in command or "$(" in command:
        return True
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return any(token and set(token) <= _OPERATORS for token in lexer)


def command_argv(command: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment for one Procfile command, without a shell in between (so the process's pid is
    the one that runs, and its exit status is its own).

    Handles what the Procfile uses: leading ``NAME=value`` assignments, ``$VAR``, ``${VAR}`` and
    ``${VAR:-default}``, quoting. Anything more (pipes, ``&&``, redirections) runs under ``/bin/sh -c``.
    """
    if _needs_shell(command):
        return ["/bin/sh", "-c", command], dict(env)
    words = shlex.split(_expand(command, env))
    own_env = dict(env)
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        own_env[name] = value
    if not words:
        raise ValueError(f"no command in {command!r}")
    return words, own_env


@dataclass
class Backoff:
    """Restart delays: ``initial`` doubling up to ``maximum`` while a process keeps dying; a process that stayed up
    ``reset_after`` seconds starts again from ``initial``."""

    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 30.0

    def delay(self, previous: float | None, uptime: float) -> float:
        if previous is None or uptime >= self.reset_after:
            return self.initial
        return min(previous * 2, self.maximum)


def exit_description(returncode: int) -> str:
    """``exited with code 3`` or ``was killed by SIGKILL``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


@dataclass
class Supervised:
    """One Procfile process and its current incarnation."""

    entry: ProcfileEntry
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay: float | None = None
    restart_at: float | None = None
    readers: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    """Starts every entry, restarts those that exit, and stops them all on request."""

    def __init__(
        self,
        entries: list[ProcfileEntry],
        env: dict[str, str],
        *,
        cwd: Path,
        out: IO[str] | None = None,
        backoff: Backoff | None = None,
        stop_timeout: float = 20.0,
        poll_seconds: float = 0.1,
    ) -> None:
        self.cwd = cwd
        self.out = out or sys.stdout
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        self.poll_seconds = poll_seconds
        self.processes: list[Supervised] = []
        for entry in entries:
            argv, own_env = command_argv(entry.command, env)
            self.processes.append(Supervised(entry, argv, own_env))
        self._width = max([len(e.name) for e in entries] + [len("atrium")])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kill = threading.Event()
        self._done = threading.Event()
        self._monitor: threading.Thread | None = None
        # Called (from the watching thread) after a process starts or exits: the runner records the pids.
        self.on_change: Callable[[], None] | None = None

    # ------------------------------------------------------------------------------------------- public

    def start(self) -> None:
        """Start every process, then watch them from a background thread."""
        for supervised in self.processes:
            self._spawn(supervised)
        self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._monitor.start()

    def stop(self) -> None:
        """Ask every process to stop (safe from a signal handler); asked again, kill them at once."""
        if self._stop.is_set():
            self._kill.set()
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every process has stopped after :meth:`stop`; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            # Short waits: the main thread stays responsive to signals.
            self._done.wait(0.5 if remaining is None else min(0.5, remaining))
        return True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def pids(self) -> dict[str, int]:
        """Process name → pid of its current incarnation (running ones only)."""
        return {s.entry.name: s.proc.pid for s in self.processes if s.proc is not None and not self._exited(s.proc)}

    def say(self, message: str) -> None:
        """A console line from the supervisor itself."""
        self._write("atrium", message)

    # ------------------------------------------------------------------------------------------ private

    def _write(self, name: str, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            self.out.write(f"{stamp} {name:<{self._width}} | {line}\n")
            self.out.flush()

    def _spawn(self, supervised: Supervised) -> None:
        supervised.started_at = time.monotonic()
        supervised.restart_at = None
        try:
            proc = subprocess.Popen(
                supervised.argv,
                env=supervised.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:  # e.g. the program is missing: try again later, like any other failure
            supervised.proc = None
            supervised.delay = self.backoff.delay(supervised.delay, 0.0)
            supervised.restart_at = time.monotonic() + supervised.delay
            self.say(f"{supervised.entry.name} could not start ({exc}); trying again in {supervised.delay:g} s")
            return
        supervised.proc = proc
        reader = threading.Thread(target=self._relay, args=(supervised.entry.name, proc), daemon=True)
        reader.start()
        supervised.readers = [r for r in supervised.readers if r.is_alive()] + [reader]
        again = f" again (restart {supervised.restarts})" if supervised.restarts else ""
        self.say(f"{supervised.entry.name} started{again} (pid {proc.pid})")
        self._changed()

    def _relay(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in iter(proc.stdout.readline, b""):
                self._write(name, raw.decode(errors="replace").rstrip("\n"))

    def _exited(self, proc: subprocess.Popen[bytes]) -> bool:
        """Whether the process has exited, without reaping it: until it is reaped its pid stays reserved, so
        its process group can be killed without any risk of hitting another process."""
        if proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return proc.poll() is not None

    def _reap(self, proc: subprocess.Popen[bytes]) -> int:
        """Kill what the exited process left in its group, then reap it; its exit status."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for supervised in self.processes:
                    proc = supervised.proc
                    if supervised.restart_at is not None:
                        if now >= supervised.restart_at:
                            supervised.restarts += 1
                            self._spawn(supervised)
                    elif proc is not None and self._exited(proc):
                        self._schedule_restart(supervised, self._reap(proc), now)
                self._stop.wait(self.poll_seconds)
        finally:
            # Also after a bug above: never leave processes running behind a runner that stops watching them.
            try:
                self._stop_all()
            finally:
                self._done.set()

    def _schedule_restart(self, supervised: Supervised, returncode: int, now: float) -> None:
        uptime = now - supervised.started_at
        supervised.delay = self.backoff.delay(supervised.delay, uptime)
        supervised.restart_at = now + supervised.delay
        assert supervised.proc is not None
        self.say(
            f"{supervised.entry.name} (pid {supervised.proc.pid}) {exit_description(returncode)} after {uptime:.0f} s;"
            f" restarting it in {supervised.delay:g} s"
        )
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception as exc:  # a report that failed must not stop the supervision
                self.say(f"could not record the processes ({type(exc).__name__}: {exc})")

    def _stop_all(self) -> None:
        running = [s.proc for s in self.processes if s.proc is not None and s.proc.returncode is None]
        self.say(f"stopping {len(running)} process(es) ...")
        for proc in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        pending = list(running)
        while pending and time.monotonic() < deadline and not self._kill.is_set():
            for proc in list(pending):
                if self._exited(proc):
                    self._reap(proc)
                    pending.remove(proc)
            time.sleep(0.05)
        for proc in pending:  # past the grace period (or asked twice): no more waiting
            self._reap(proc)
        for supervised in self.processes:
            for reader in supervised.readers:
                reader.join(timeout=2)
        self.say("every process has stopped")
