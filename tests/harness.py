"""Start real Atrium processes for cross-process tests.

``AtriumProcess`` runs a service under gunicorn or a Celery worker for a queue,
on a free port, against the database URL it is given, waits until it is ready
and stops it (its whole process group) afterwards. Output goes to a log file
whose JSON lines tests can read.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.db import connection

from devtools.infra import REPO_ROOT, database_create, database_drop, database_url_with_name, free_port, venv_env
from devtools.processes import process_group_stop

SETTINGS = {
    "portal": "portal.settings",
    "ledger": "services.ledger.settings",
    "payments": "services.payments.settings",
    "webhooks": "services.webhooks.settings",
}
WSGI = {
    "portal": "portal.wsgi",
    "ledger": "services.ledger.wsgi",
    "payments": "services.payments.wsgi",
    "webhooks": "services.webhooks.wsgi",
}
MANAGE = {
    "portal": "manage.py",
    "ledger": "services/ledger/manage.py",
    "payments": "services/payments/manage.py",
    "webhooks": "services/webhooks/manage.py",
}


def database_server_url() -> str:
    """URL of the PostgreSQL server the tests run on (any database name)."""
    explicit = os.environ.get("ATRIUM_TEST_DATABASE_SERVER")
    if explicit:
        return explicit
    db = settings.DATABASES["default"]
    host = db.get("HOST") or ""
    options = db.get("OPTIONS", {})
    query = f"?host={options['host']}" if options.get("host") else ""
    port = f":{db['PORT']}" if db.get("PORT") else ""
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgresql://{auth}@{host}{port}/postgres{query}"


def current_test_database_url() -> str:
    """URL of the database this pytest process is using (the test database)."""
    return database_url_with_name(database_server_url(), connection.settings_dict["NAME"])


def base_env(service: str, database_url: str, **extra: str) -> dict[str, str]:
    env = venv_env(dict(os.environ))
    for name in (
        "DATABASE_URL",
        "PORTAL_DATABASE_URL",
        "LEDGER_DATABASE_URL",
        "PAYMENTS_DATABASE_URL",
        "WEBHOOKS_DATABASE_URL",
    ):
        env.pop(name, None)
    env.update(
        ATRIUM_ENV="test",
        DJANGO_SETTINGS_MODULE=SETTINGS[service],
        PYTHONUNBUFFERED="1",
        REDIS_URL=settings.REDIS_URL,
        ATRIUM_VAR_DIR=str(settings.ATRIUM_VAR_DIR),
        **{f"{service.upper()}_DATABASE_URL": database_url},
    )
    # Test services run on loopback: the portal's outbound guard may poll them there (``extra`` may say otherwise).
    env.setdefault("ATRIUM_OUTBOUND_ALLOW_NETWORKS", "127.0.0.1/32")
    env.update(extra)
    return env


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """``check()``'s first truthy value, polled every ``every`` seconds; an AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@dataclass
class AtriumProcess:
    """One running Atrium process (web or worker) started by a test."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    url: str | None = None
    queue: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> AtriumProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-4000:]}")

    def wait_ready(self, timeout: float = 60.0) -> AtriumProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self._ready():
                return self
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout} s:\n{self.output()[-4000:]}")

    def _ready(self) -> bool:
        if self.url:
            try:
                return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        from celery.exceptions import TimeoutError as CeleryTimeout

        from workers.celery import app

        try:
            app.send_task(f"{self.queue}.ping", kwargs={"message": "harness"}).get(timeout=2)
        except CeleryTimeout:
            return False
        return True

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            process_group_stop(self.proc, timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines this process wrote so far."""
        records = []
        for line in self.output().splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
        return records


class ProcessHarness:
    """Starts processes and service databases for one test, and cleans all of them up."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[AtriumProcess] = []
        self.databases: list[str] = []

    def service_database(self, service: str) -> str:
        """A fresh, migrated database for ``service``; dropped at teardown."""
        name = f"atrium_it_{service}_{uuid.uuid4().hex[:8]}"
        server = database_server_url()
        database_create(server, name)
        self.databases.append(name)
        url = database_url_with_name(server, name)
        subprocess.run(
            [sys.executable, MANAGE[service], "migrate", "--noinput", "-v", "0"],
            env=base_env(service, url),
            cwd=REPO_ROOT,
            check=True,
        )
        return url

    def web(
        self,
        service: str,
        *,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> AtriumProcess:
        """Run ``service`` under gunicorn on ``port`` (a free one by default); wait for ``/health/ready``."""
        database_url = database_url or self.service_database(service)
        port = port or free_port()
        process = AtriumProcess(
            name=f"{service}-web",
            cmd=[
                str(Path(sys.executable).parent / "gunicorn"),
                WSGI[service],
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "4",
            ],
            env=base_env(service, database_url, **(env or {})),
            log_path=self.log_dir / f"{service}-web-{port}.log",
            url=f"http://127.0.0.1:{port}",
        )
        self.processes.append(process)
        return process.start().wait_ready()

    def worker(
        self,
        queue: str,
        *,
        service: str | None = None,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> AtriumProcess:
        """Run a Celery worker consuming ``queue`` with its service's settings; wait until it answers a ping."""
        service = service or ("portal" if queue in ("portal", "audit") else queue)
        database_url = database_url or self.service_database(service)
        node = f"{queue}-{uuid.uuid4().hex[:6]}@%h"
        process = AtriumProcess(
            name=f"{queue}-worker",
            cmd=[
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "workers",
                "worker",
                "-Q",
                queue,
                "-n",
                node,
                "--concurrency",
                "1",
                "--without-gossip",
                "--without-mingle",
            ],
            env=base_env(service, database_url, **(env or {})),
            log_path=self.log_dir / f"{queue}-worker-{uuid.uuid4().hex[:6]}.log",
            queue=queue,
        )
        self.processes.append(process)
        return process.start().wait_ready()

    def command(
        self,
        service: str,
        *args: str,
        database_url: str,
        env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> AtriumProcess:
        """Run ``manage.py <args>`` of ``service`` as a long-lived process (an outbox relay, the webhooks
        dispatcher), started, not waited for: the caller knows what ready means for it."""
        name = name or f"{service}-{args[0]}"
        process = AtriumProcess(
            name=name,
            cmd=[sys.executable, MANAGE[service], *args],
            env=base_env(service, database_url, **(env or {})),
            log_path=self.log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log",
        )
        self.processes.append(process)
        return process.start()

    def jobs_monitor(
        self, stream: str, *, name: str = "jobs-monitor", consumer: str = "e2e", batch: int = 200
    ) -> AtriumProcess:
        """``manage.py jobs_monitor`` on this run's test database reading ``stream``, started (its log says when
        it reads)."""
        process = AtriumProcess(
            name=name,
            cmd=[sys.executable, "manage.py", "jobs_monitor", "--consumer", consumer, "--batch", str(batch)],
            env=base_env("portal", current_test_database_url(), JOBS_STREAM=stream),
            log_path=self.log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log",
        )
        self.processes.append(process)
        process.start()
        wait_until(
            lambda: any(r.get("event") == "jobs.monitor_started" for r in process.log_records()), 30, "monitor up"
        )
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        server = database_server_url()
        for name in self.databases:
            with contextlib.suppress(Exception):
                database_drop(server, name)
