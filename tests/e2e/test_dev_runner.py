"""`make up` (python -m devtools up) on a fresh var/: embedded servers, migrations, demo
credentials, every process ready, and Ctrl-C stops everything it started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from devtools.infra import REPO_ROOT, free_port, venv_env

pytestmark = pytest.mark.slow


def demo_token(creds: dict, audience: str) -> str:
    """A token for ``audience`` from the runner's portal, for the demo client it printed."""
    response = httpx.post(
        f"{creds['urls']['portal']}/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds["client"]["client_id"],
            "client_secret": creds["client"]["client_secret"],
            "audience": audience,
        },
        timeout=10,
    )
    return response.json()["access_token"]


def test_dev_runner_brings_every_service_up_and_ctrl_c_stops_them(tmp_path: Path):
    # given a fresh var directory, no DATABASE_URL/REDIS_URL (embedded servers) and free ports
    env = venv_env(dict(os.environ))
    for name in list(env):
        if name.endswith("DATABASE_URL") or name in ("REDIS_URL", "DJANGO_SETTINGS_MODULE", "ATRIUM_ENV"):
            env.pop(name)
    ports = {"portal": free_port(), "ledger": free_port(), "payments": free_port(), "risk": free_port()}
    env.update(
        ATRIUM_VAR_DIR=str(tmp_path / "var"),
        PORTAL_PORT=str(ports["portal"]),
        LEDGER_PORT=str(ports["ledger"]),
        PAYMENTS_PORT=str(ports["payments"]),
        RISK_PORT=str(ports["risk"]),
        WEB_CONCURRENCY="1",
        CELERY_WORKER_CONCURRENCY="1",
    )
    log_path = tmp_path / "up.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "devtools", "up"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # when it has had time to start
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and "Atrium is up." not in log_path.read_text(errors="replace"):
            assert runner.poll() is None, log_path.read_text(errors="replace")[-4000:]
            time.sleep(1)
        output = log_path.read_text(errors="replace")
        assert "Atrium is up." in output, output[-4000:]
        elapsed = time.monotonic() - started

        # then every web process is ready and the banner names URLs and credentials
        for name, port in ports.items():
            response = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
            assert response.status_code == 200, (name, response.text)
        creds = json.loads((tmp_path / "var" / "dev-credentials.json").read_text())
        assert set(creds) == {"admin", "client", "urls", "services", "sso"}
        assert creds["urls"]["ledger"] == f"http://127.0.0.1:{ports['ledger']}"
        assert creds["admin"]["password"] in output
        assert creds["client"]["client_secret"] in output
        assert f"  risk      http://127.0.0.1:{ports['risk']}/api/docs   (node: services/risk)" in output
        assert "atrium: migrating risk ..." in output

        # and each service admin signs people in at the portal with its own client (docs/sso.md)
        for service in ("ledger", "payments"):
            login = httpx.get(f"{creds['urls'][service]}/oidc/authenticate", timeout=10)
            assert login.status_code == 302, login.text
            assert login.headers["location"].startswith(f"{creds['urls']['portal']}/o/authorize?")
            assert f"client_id={creds['sso'][service]['client_id']}" in login.headers["location"]

        # and the demo client can drive the ledger API with a portal token
        token = demo_token(creds, "ledger")
        whoami = httpx.get(
            f"{creds['urls']['ledger']}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert whoami.status_code == 200, whoami.text
        assert elapsed < 150

        # and a payment settles: payments reaches the ledger with its own credentials from the runner
        ledger_http = httpx.Client(
            base_url=creds["urls"]["ledger"], headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        accounts = []
        for extra in ({"allow_negative": True}, {}):
            body = {"name": "dev-runner", "currency": "EUR", "normal_balance": "credit", **extra}
            accounts.append(ledger_http.post("/api/v1/accounts", json=body).json()["id"])
        payments_token = demo_token(creds, "payments")
        payments_http = httpx.Client(
            base_url=creds["urls"]["payments"], headers={"Authorization": f"Bearer {payments_token}"}, timeout=10
        )
        order = {"amount": 500, "currency": "EUR", "source_account": accounts[0], "destination_account": accounts[1]}
        created = payments_http.post("/api/v1/payments", json=order)
        assert created.status_code == 201, created.text
        status, settle_by = "", time.monotonic() + 60
        while status != "settled" and time.monotonic() < settle_by:
            status = payments_http.get(f"/api/v1/payments/{created.json()['id']}").json()["status"]
            assert status not in ("failed", "rejected"), payments_http.get(
                f"/api/v1/payments/{created.json()['id']}"
            ).text
            time.sleep(0.5)
        assert status == "settled"

        # and every process registered itself in the catalog and heartbeats; the payment's calls to the ledger
        # are an observed edge (the ledger reports them with its next heartbeat)
        portal_token = demo_token(creds, "portal")
        catalog = httpx.Client(
            base_url=creds["urls"]["portal"], headers={"Authorization": f"Bearer {portal_token}"}, timeout=10
        )
        expected = {
            "portal",
            "ledger",
            "payments",
            "worker-portal",
            "worker-audit",
            "worker-ledger",
            "worker-payments",
            "beat",
            "relay-portal",
            "relay-ledger",
            "relay-payments",
            "jobs-monitor",
            "webhooks",
            "worker-webhooks",
            "relay-webhooks",
            "dispatcher-webhooks",
            "risk",  # the Node service: its catalog agent registers and heartbeats like the kit's
        }
        live: set[str] = set()
        edge: dict = {}
        registered_by = time.monotonic() + 30
        while (live != expected or not edge.get("observed")) and time.monotonic() < registered_by:
            services = catalog.get("/api/v1/catalog/services").json()
            live = {s["slug"] for s in services if s["status"] == "passing"}
            edges = catalog.get("/api/v1/catalog/graph").json()["edges"]
            edge = next((e for e in edges if (e["from"], e["to"]) == ("payments", "ledger")), {})
            time.sleep(1)
        assert live == expected
        assert edge["declared"] is True
        assert edge["observed"] is True

        # and the job monitor recorded the payment's work on the payments queue, run by a worker
        drains: list = []
        recorded_by = time.monotonic() + 30
        while not drains and time.monotonic() < recorded_by:
            listed = catalog.get("/api/v1/jobs/tasks", params={"name": "payments.drain", "state": "succeeded"})
            assert listed.status_code == 200, listed.text
            drains = listed.json()["results"]
            time.sleep(0.5)
        assert drains
        assert drains[0]["queue"] == "payments"
        assert drains[0]["service"] == "payments"
        assert drains[0]["worker"].startswith("payments@")
        children = psutil.Process(runner.pid).children(recursive=True)
        assert len(children) >= 9  # 3 web + 4 workers + beat + the job monitor + 3 relays (and their pools)
    finally:
        # when Ctrl-C reaches the runner (the terminal's foreground process group)
        started_children = psutil.Process(runner.pid).children(recursive=True) if runner.poll() is None else []
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGINT)
        try:
            runner.wait(60)
        except subprocess.TimeoutExpired:
            for child in [*started_children, psutil.Process(runner.pid)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            raise
    assert runner.returncode == 0, log_path.read_text(errors="replace")[-3000:]

    # then every process it started is gone, embedded servers included
    time.sleep(1)
    leftovers = [
        p for p in psutil.process_iter(["pid", "cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers, [p.info for p in leftovers]
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)
