"""``make up``: databases, migrations, demo credentials, then every process under the supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devtools.infra import REPO_ROOT, database_create, infra_start, venv_env
from devtools.supervisor import Supervisor, procfile_read

# process name → (settings module, manage.py, port env, default port)
WEB = {
    "portal": ("portal.settings", "manage.py", "PORTAL_PORT", 8000),
    "ledger": ("services.ledger.settings", "services/ledger/manage.py", "LEDGER_PORT", 8001),
    "payments": ("services.payments.settings", "services/payments/manage.py", "PAYMENTS_PORT", 8002),
}


def service_env(infra_urls: dict[str, str], base: dict[str, str]) -> dict[str, str]:
    env = venv_env(base)
    env.update(infra_urls)
    env.setdefault("ATRIUM_ENV", "dev")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _run(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, env=env, cwd=REPO_ROOT, check=True)


def _wait_ready(urls: dict[str, str], deadline: float, supervisor: Supervisor) -> bool:
    pending = dict(urls)
    while pending and time.monotonic() < deadline and not supervisor.stopping:
        for name, url in list(pending.items()):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    return not pending


def main(argv: list[str]) -> int:
    var_dir = Path(os.environ.get("ATRIUM_VAR_DIR") or REPO_ROOT / "var").resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ["ATRIUM_VAR_DIR"] = str(var_dir)
    print("atrium: starting infrastructure ...", flush=True)
    infra = infra_start("dev", var_dir=var_dir)
    try:
        env = service_env(
            {
                "REDIS_URL": infra.redis_url,
                **{f"{name.upper()}_DATABASE_URL": infra.service_database_url(f"atrium_{name}") for name in WEB},
            },
            dict(os.environ),
        )
        env.pop("DATABASE_URL", None)  # each process gets its own <SERVICE>_DATABASE_URL
        env.setdefault("WEB_CONCURRENCY", "2")  # a laptop runs every service at once: keep each one small
        ports = {name: int(env.get(port_var, default)) for name, (_, _, port_var, default) in WEB.items()}
        for name, (_, _, port_var, _) in WEB.items():
            env[port_var] = str(ports[name])
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env.setdefault("JWT_JWKS_URL", f"{urls['portal']}/.well-known/jwks.json")
        env.setdefault("ATRIUM_TOKEN_URL", f"{urls['portal']}/api/v1/auth/token")

        for name, (settings_module, manage, _, _) in WEB.items():
            database_create(infra.database_url, f"atrium_{name}")
            print(f"atrium: migrating {name} ...", flush=True)
            _run(
                [sys.executable, manage, "migrate", "--noinput", "-v", "0"],
                env | {"DJANGO_SETTINGS_MODULE": settings_module},
            )
        credentials = var_dir / "dev-credentials.json"
        _run(
            [sys.executable, "manage.py", "demo_setup", "--credentials", str(credentials)]
            + [f"--url={name}={url}" for name, url in urls.items()],
            env | {"DJANGO_SETTINGS_MODULE": "portal.settings"},
        )
        creds = json.loads(credentials.read_text())
        # Each service's own machine credentials, and where it finds the others.
        for service, own in creds.get("services", {}).items():
            env[f"{service.upper()}_CLIENT_ID"] = own["client_id"]
            env[f"{service.upper()}_CLIENT_SECRET"] = own["client_secret"]
        # Where each service is reached: what the others call, and what it registers in the catalog.
        for name, url in urls.items():
            env.setdefault(f"{name.upper()}_URL", url)
        env.setdefault("ATRIUM_PORTAL_URL", urls["portal"])
        # Every service runs on this machine's loopback: the portal may poll their health URLs there (and only
        # there: other inside addresses stay refused by the kit's outbound guard).
        env.setdefault("ATRIUM_OUTBOUND_ALLOW_NETWORKS", "127.0.0.1/32")

        # Every Procfile process in a session of its own, restarted when it exits (devtools/supervisor.py):
        # a Ctrl-C (or SIGTERM) reaches only this runner, which stops them all, then the embedded servers.
        supervisor = Supervisor(procfile_read(REPO_ROOT / "Procfile"), env, cwd=REPO_ROOT)

        def stop(signum: int, frame: object) -> None:
            if not supervisor.stopping:
                print("\natrium: stopping every process ...", flush=True)
            supervisor.stop()  # a second Ctrl-C kills at once

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        supervisor.start()
        ready = _wait_ready(urls, time.monotonic() + 120, supervisor)
        postgres_where = f"embedded ({var_dir}/dev/postgres)" if infra.embedded_postgres else "external (DATABASE_URL)"
        banner = [
            "",
            "=" * 72,
            "Atrium is up." if ready else "Atrium started, but not every service is ready yet (see logs above).",
            f"  portal    {urls['portal']}/admin/   (API docs {urls['portal']}/api/docs)",
            f"  catalog   {urls['portal']}/admin/catalog/overview/",
            f"  ledger    {urls['ledger']}/api/docs",
            f"  payments  {urls['payments']}/api/docs",
            f"  admin     username={creds['admin']['username']}  password={creds['admin']['password']}",
            f"  client    client_id={creds['client']['client_id']}",
            f"            client_secret={creds['client']['client_secret']}",
            f"  token     curl -s {urls['portal']}/api/v1/auth/token -d grant_type=client_credentials \\",
            f"              -d client_id={creds['client']['client_id']} -d client_secret=... -d audience=ledger",
            f"  postgres  {postgres_where}",
            f"  redis     {infra.redis_url}{' (embedded)' if infra.embedded_redis else ''}",
            f"  saved to  {credentials}",
            "A process that exits is restarted (1 s, doubling to 30 s). Press Ctrl-C to stop every process.",
            "=" * 72,
            "",
        ]
        print("\n".join(banner), flush=True)
        supervisor.wait()
        return 0 if supervisor.stopping else 1  # 1: the supervisor itself failed
    finally:
        print("atrium: stopping infrastructure ...", flush=True)
        infra.stop()
