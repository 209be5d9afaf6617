"""``make up`` (``python -m devtools up``) run by a test: embedded servers under a private ``ATRIUM_VAR_DIR``, free
ports, its console in a file; what the supervisor says about each process; a payment driven end to end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil

from devtools.infra import REPO_ROOT, free_port, venv_env
from tests.harness import wait_until

# "<time> atrium          | worker_payments started again (restart 1) (pid 4242)"
_STARTED = re.compile(r"\| (?P<name>\w+) started(?: again \(restart \d+\))? \(pid (?P<pid>\d+)\)$")


class DevRunner:
    """One ``make up`` in its own session; :meth:`close` makes sure nothing of it is left."""

    def __init__(self, var_dir: Path, log_path: Path) -> None:
        env = venv_env(dict(os.environ))
        for name in list(env):
            if name.endswith("DATABASE_URL") or name in ("REDIS_URL", "DJANGO_SETTINGS_MODULE", "ATRIUM_ENV"):
                env.pop(name)
        self.ports = {name: free_port() for name in ("portal", "ledger", "payments", "webhooks", "risk", "receiver")}
        env.update(
            ATRIUM_VAR_DIR=str(var_dir),
            PORTAL_PORT=str(self.ports["portal"]),
            LEDGER_PORT=str(self.ports["ledger"]),
            PAYMENTS_PORT=str(self.ports["payments"]),
            WEBHOOKS_PORT=str(self.ports["webhooks"]),
            RISK_PORT=str(self.ports["risk"]),
            WEBHOOK_RECEIVER_PORT=str(self.ports["receiver"]),
            WEB_CONCURRENCY="1",
            CELERY_WORKER_CONCURRENCY="1",
        )
        self.var_dir = var_dir
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devtools", "up"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def console(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, containing: str) -> list[str]:
        return [line for line in self.console().splitlines() if containing in line]

    def wait_up(self, timeout: float) -> dict[str, Any]:
        """Wait for the banner; the credentials it saved."""

        def up() -> bool:
            assert self.proc.poll() is None, self.console()[-4000:]
            return "Atrium is up." in self.console()

        wait_until(up, timeout, "make up's banner", every=1)
        return json.loads((self.var_dir / "dev-credentials.json").read_text())

    def pids(self) -> dict[str, int]:
        """Each Procfile process's latest pid, as the supervisor announced it."""
        found: dict[str, int] = {}
        for line in self.console().splitlines():
            match = _STARTED.search(line)
            if match:
                found[match["name"]] = int(match["pid"])
        return found

    def processes(self) -> list[psutil.Process]:
        """The runner and everything it started that is still there: its descendants, and the embedded servers,
        which daemonize (PostgreSQL found by its data directory, with its own processes; Redis by its port)."""
        found: dict[int, psutil.Process] = {}
        roots = []
        with contextlib.suppress(psutil.NoSuchProcess):
            roots.append(psutil.Process(self.proc.pid))
        for process in psutil.process_iter(["cmdline"]):
            if str(self.var_dir) in " ".join(process.info["cmdline"] or []):
                roots.append(process)
        redis = re.search(r"redis\s+redis://127\.0\.0\.1:(\d+)/\d+ \(embedded\)", self.console())
        if redis:
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == int(redis[1]) and conn.pid:
                    roots.append(psutil.Process(conn.pid))
        for root in roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                found[root.pid] = root
                for child in root.children(recursive=True):
                    found[child.pid] = child
        return list(found.values())

    def interrupt(self) -> None:
        """Ctrl-C in the terminal: SIGINT to the runner's process group (only the runner is in it)."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def close(self) -> None:
        if self.proc.poll() is None:
            leftovers = self.processes()
            with contextlib.suppress(ProcessLookupError):
                self.interrupt()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                for process in leftovers:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.kill()
                self.proc.wait(10)


def alive(process: psutil.Process) -> bool:
    """Whether this very process (not a later one with its pid) is still running."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class DemoClient:
    """The demo machine client ``make up`` printed, talking to the runner's services."""

    def __init__(self, creds: dict[str, Any]) -> None:
        self.creds = creds
        self.urls = creds["urls"]

    def http(self, audience: str) -> httpx.Client:
        response = httpx.post(
            f"{self.urls['portal']}/api/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.creds["client"]["client_id"],
                "client_secret": self.creds["client"]["client_secret"],
                "audience": audience,
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        return httpx.Client(base_url=self.urls[audience], headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def payment_settles(self, timeout: float) -> str:
        """Create two ledger accounts and a payment between them; wait until it settles; its id."""
        ledger = self.http("ledger")
        accounts = []
        for extra in ({"allow_negative": True}, {}):
            body = {"name": "hostile-dev-runner", "currency": "EUR", "normal_balance": "credit", **extra}
            created = ledger.post("/api/v1/accounts", json=body)
            assert created.status_code == 201, created.text
            accounts.append(created.json()["id"])
        payments = self.http("payments")
        order = {"amount": 700, "currency": "EUR", "source_account": accounts[0], "destination_account": accounts[1]}
        created = payments.post("/api/v1/payments", json=order)
        assert created.status_code == 201, created.text
        payment_id = created.json()["id"]

        def settled() -> bool:
            status = payments.get(f"/api/v1/payments/{payment_id}").json()["status"]
            assert status not in ("failed", "rejected", "canceled"), status
            return status == "settled"

        wait_until(settled, timeout, f"payment {payment_id} to settle", every=0.5)
        return payment_id

    def instance_heartbeats(self, slug: str, pid: int) -> bool:
        """Whether the catalog has a heartbeat from the instance of ``slug`` with this pid."""
        listed = self.http("portal").get(f"/api/v1/catalog/services/{slug}/instances")
        if listed.status_code != 200:
            return False
        body = listed.json()
        instances = body["results"] if isinstance(body, dict) else body
        return any(i["pid"] == pid and i["heartbeats"] > 0 for i in instances)
