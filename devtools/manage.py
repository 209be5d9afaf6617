"""``./bin/atrium manage <process> <command> [args]``: a Django management command of one service, with the
environment ``make up`` gives that process (its settings, database, Redis, URLs and machine credentials).

When ``make up`` runs from this var directory its servers are used; otherwise the embedded ones are started for
the command and stopped after it (external ones, from ``DATABASE_URL`` / ``REDIS_URL``, are used as they are).
The command gets this terminal: ``shell``, ``dbshell`` and ``createsuperuser`` are interactive as usual.
A Node service (``risk``) has no management commands: ``./bin/atrium manage risk migrate`` runs its
``src/migrate.ts``, anything else is refused with a line saying so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devtools.infra import REPO_ROOT, Infra, database_create, infra_start
from devtools.node import node_path, npm_ci
from devtools.registry import SERVICES, service_get
from devtools.state import state_read, var_dir_get
from devtools.up import process_env

USAGE = (
    "usage: ./bin/atrium manage <process> <command> [args]\n"
    f"  process: {' | '.join(s.name for s in SERVICES)}\n"
    "  e.g. ./bin/atrium manage portal audit_verify, ./bin/atrium manage ledger dbshell"
)


# Commands that make sense on a database whose migrations are not all applied (the rest would fail on a missing
# table with a traceback: they are refused with one line saying what to run first).
BEFORE_MIGRATIONS = frozenset(
    {"migrate", "makemigrations", "showmigrations", "sqlmigrate", "squashmigrations", "dbshell", "shell", "check",
     "help", "version", "diffsettings", "createcachetable"}
)  # fmt: skip


def _migrations_pending(manage: str, env: dict[str, str]) -> str | None:
    """Why the command should not run yet (its database has unapplied migrations), or None."""
    done = subprocess.run(
        [sys.executable, manage, "migrate", "--check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode == 0:
        return None
    if not done.stderr.strip():  # --check's own answer: unapplied migrations, nothing else wrong
        return "its database is not migrated yet"
    return done.stderr.strip().splitlines()[-1]


def _psql_dir() -> Path | None:
    """The embedded server's client programs (``dbshell`` runs ``psql``)."""
    try:
        import pgserver
    except ImportError:
        return None
    found = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return found if (found / "psql").exists() else None


def _credentials(var_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((var_dir / "dev-credentials.json").read_text())
    except (OSError, ValueError):
        return None  # make up has never run here: no machine credentials yet


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        service = service_get(argv[0])
    except KeyError as exc:
        print(f"atrium manage: {exc.args[0]}\n{USAGE}", file=sys.stderr)
        return 2
    if not service.is_django and argv[1:] != ["migrate"]:
        print(
            f"atrium manage: {service.name} is a {service.runtime} service ({service.directory}), not Django: its one "
            f"command here is `migrate` (node {service.directory}/src/migrate.ts); for the rest use npm in "
            f"{service.directory} (README.md)",
            file=sys.stderr,
        )
        return 2
    var_dir = var_dir_get()
    os.environ["ATRIUM_VAR_DIR"] = str(var_dir)
    running = state_read(var_dir)
    infra: Infra | None = None
    if running is not None:
        database_url, redis_url = running["database_url"], running["redis_url"]
        embedded_postgres = bool(running.get("embedded_postgres"))
    else:
        print("atrium manage: `make up` is not running; starting the servers for this command ...", file=sys.stderr)
        infra = infra_start("dev", var_dir=var_dir)
        database_url, redis_url, embedded_postgres = infra.database_url, infra.redis_url, infra.embedded_postgres
    try:
        database_create(database_url, service.database)  # as make up does before it migrates
        env = process_env(
            database_url=database_url, redis_url=redis_url, creds=_credentials(var_dir), base=dict(os.environ)
        )
        if not service.is_django:
            npm_ci(REPO_ROOT / service.directory, env=env)
            return subprocess.run(
                service.migrate_argv(sys.executable, str(node_path(env))), cwd=REPO_ROOT, env=env
            ).returncode
        env["DJANGO_SETTINGS_MODULE"] = service.settings
        psql = _psql_dir() if embedded_postgres else None
        if psql is not None:
            env["PATH"] = os.pathsep.join([str(psql), env["PATH"]])
        # The embedded server listens on a socket named in the URL's query, which dbshell does not pass to psql.
        socket_dir = parse_qs(urlsplit(database_url).query).get("host")
        if socket_dir:
            env.setdefault("PGHOST", socket_dir[0])
        if running is None and argv[1] not in BEFORE_MIGRATIONS:  # (make up migrates everything as it starts)
            reason = _migrations_pending(service.manage, env)
            if reason is not None:
                print(
                    f"atrium manage: {service.name}: {reason}; run `./bin/atrium manage {service.name} migrate` "
                    "(or `make up` once) first",
                    file=sys.stderr,
                )
                return 2
        # The command owns the terminal: a Ctrl-C is its to handle; this process waits, then cleans up. (A handler,
        # not SIG_IGN: an ignored signal would stay ignored in the command, a handler is reset by exec.)
        previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
        try:
            proc = subprocess.Popen([sys.executable, service.manage, *argv[1:]], cwd=REPO_ROOT, env=env)
            return proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        if infra is not None:
            infra.stop()
