"""``make up``: databases, migrations, demo credentials, then every process under the supervisor."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from devtools.infra import REPO_ROOT, database_create, database_url_with_name, infra_start, venv_env
from devtools.node import node_env, node_path, npm_ci
from devtools.ports import port_problem
from devtools.registry import SERVICES, service_ports
from devtools.state import state_read, state_remove, state_write, var_dir_get
from devtools.supervisor import ProcfileEntry, Supervisor, procfile_read
from devtools.webhook_receiver import PORT_VAR as RECEIVER_PORT_VAR
from devtools.webhook_receiver import receiver_port, receiver_url, secret_file


def service_env(infra_urls: dict[str, str], base: dict[str, str]) -> dict[str, str]:
    """The venv's bin directory first on PATH (gunicorn, celery), and before it the chosen node's (devtools/node.py:
    the Procfile's ``node`` is Node 24 even where the system's is older)."""
    env = node_env(venv_env(base))
    env.update(infra_urls)
    env.setdefault("ATRIUM_ENV", "dev")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def process_env(
    *, database_url: str, redis_url: str, creds: dict[str, Any] | None, base: dict[str, str]
) -> dict[str, str]:
    """The environment ``make up`` gives every process (the Procfile line adds its settings module): the
    servers, each service's database, port and URL, and, once ``demo_setup`` made them, each service's
    machine credentials. ``manage`` builds the same one."""
    env = service_env(
        {
            "REDIS_URL": redis_url,
            **{s.database_url_var: database_url_with_name(database_url, s.database) for s in SERVICES},
        },
        base,
    )
    env.pop("DATABASE_URL", None)  # each process gets its own <SERVICE>_DATABASE_URL
    env.setdefault("WEB_CONCURRENCY", "2")  # a laptop runs every service at once: keep each one small
    env.setdefault("ATRIUM_LOG_FORMAT", "console")  # one readable line per event (services/kit/logs.py)
    ports = service_ports(env)
    for service in SERVICES:
        env[service.port_var] = str(ports[service.name])
    urls = service_urls(env)
    env.setdefault("JWT_JWKS_URL", f"{urls['portal']}/.well-known/jwks.json")
    env.setdefault("ATRIUM_TOKEN_URL", f"{urls['portal']}/api/v1/auth/token")
    # Each service's own machine credentials, and where it finds the others.
    for service, own in (creds or {}).get("services", {}).items():
        env[f"{service.upper()}_CLIENT_ID"] = own["client_id"]
        env[f"{service.upper()}_CLIENT_SECRET"] = own["client_secret"]
    # Each service admin's sign-in client at the portal (docs/sso.md).
    for service, own in (creds or {}).get("sso", {}).items():
        env[f"{service.upper()}_OIDC_CLIENT_ID"] = own["client_id"]
        env[f"{service.upper()}_OIDC_CLIENT_SECRET"] = own["client_secret"]
    # Where each service is reached: what the others call, and what it registers in the catalog.
    for name, url in urls.items():
        env.setdefault(f"{name.upper()}_URL", url)
    env.setdefault("ATRIUM_PORTAL_URL", urls["portal"])
    # Every service runs on this machine's loopback: the portal may poll their health URLs there (and only
    # there: other inside addresses stay refused by the kit's outbound guard).
    env.setdefault("ATRIUM_OUTBOUND_ALLOW_NETWORKS", "127.0.0.1/32")
    # The demo webhook receiver (Procfile.dev) listens there too: the webhooks service may deliver to loopback in
    # this environment only (its SSRF guard refuses it anywhere else unless allow-listed, docs/webhooks.md).
    env.setdefault("WEBHOOKS_ALLOWED_NETWORKS", "127.0.0.1/32")
    env[RECEIVER_PORT_VAR] = str(receiver_port(env))
    return env


def procfile_entries() -> list[ProcfileEntry]:
    """Every process ``make up`` runs: the Procfile's (production's too), then ``Procfile.dev``'s (dev only: the
    demo webhook receiver)."""
    entries = procfile_read(REPO_ROOT / "Procfile")
    dev = REPO_ROOT / "Procfile.dev"
    return entries + (procfile_read(dev) if dev.exists() else [])


def webhooks_demo(env: dict[str, str], var_dir: Path) -> str | None:
    """Subscribe the demo receiver to ``payment.*`` (idempotent: a re-run keeps its endpoint and secret) and hand it
    the secret in ``var/webhook-receiver.json``; the receiver's URL, or None without a webhooks service."""
    service = next((s for s in SERVICES if s.name == "webhooks"), None)
    if service is None:
        return None
    url = receiver_url(env)
    _run(
        [sys.executable, service.manage, "webhooks_demo_receiver", f"--url={url}", f"--secret={secret_file(var_dir)}"],
        env | {"DJANGO_SETTINGS_MODULE": service.settings},
    )
    return url


def service_urls(env: dict[str, str]) -> dict[str, str]:
    return {name: f"http://127.0.0.1:{port}" for name, port in service_ports(env).items()}


def _run(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, env=env, cwd=REPO_ROOT, check=True)


def _listeners(ports: dict[str, int]) -> dict[str, set[int]]:
    """Service name → pids listening on its port."""
    by_port = {port: name for name, port in ports.items()}
    found: dict[str, set[int]] = {name: set() for name in ports}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in by_port and conn.pid:
            found[by_port[conn.laddr.port]].add(conn.pid)
    return found


def _ours(pid: int | None, listeners: set[int]) -> bool:
    """Whether the supervised process ``pid`` (or one of its children: gunicorn's workers) holds the port."""
    if pid is None:
        return False
    try:
        family = {pid} | {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return False
    return bool(family & listeners)


def _wait_ready(urls: dict[str, str], ports: dict[str, int], deadline: float, supervisor: Supervisor) -> set[str]:
    """The services that answer ready from a process this run started (another program on the port does not
    count), waiting for all of them until ``deadline``."""
    ready: set[str] = set()
    while len(ready) < len(urls) and time.monotonic() < deadline and not supervisor.stopping:
        listeners = _listeners(ports)
        pids = supervisor.pids()
        for name, url in urls.items():
            if name in ready or not _ours(pids.get(name), listeners[name]):
                continue
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    ready.add(name)
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    return ready


def preflight(var_dir: Path, env: dict[str, str]) -> str | None:
    """Why ``make up`` cannot start here, in one line, before it starts anything; None when it can."""
    running = state_read(var_dir)
    if running is not None:
        return f"`make up` is already running from {var_dir} (pid {running['pid']}); stop it first (Ctrl-C there)"
    host = env.get("BIND_HOST") or "127.0.0.1"
    for port in [*service_ports(env).values(), receiver_port(env)]:
        problem = port_problem(port, host)
        if problem:
            return problem
    return None


def main(argv: list[str]) -> int:
    var_dir = var_dir_get()
    problem = preflight(var_dir, dict(os.environ))
    if problem:
        print(f"atrium: {problem}", file=sys.stderr, flush=True)
        return 1
    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ["ATRIUM_VAR_DIR"] = str(var_dir)
    print("atrium: starting infrastructure ...", flush=True)
    infra = infra_start("dev", var_dir=var_dir)
    started: Supervisor | None = None
    try:
        base = dict(os.environ)
        base.setdefault("ATRIUM_LOG_COLOR", "1" if sys.stdout.isatty() else "0")
        env = process_env(database_url=infra.database_url, redis_url=infra.redis_url, creds=None, base=base)
        ports = service_ports(env)
        urls = service_urls(env)
        credentials = var_dir / "dev-credentials.json"
        # From here on a second `make up` from this var directory is refused (even before any port is bound),
        # `manage` uses these servers and `status` reports on them.
        state = {
            "pid": os.getpid(),
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "var_dir": str(var_dir),
            "database_url": infra.database_url,
            "redis_url": infra.redis_url,
            "embedded_postgres": infra.embedded_postgres,
            "embedded_redis": infra.embedded_redis,
            "urls": urls,
            "credentials": str(credentials),
            "processes": {},
        }
        state_write(var_dir, state)

        for service in SERVICES:
            database_create(infra.database_url, service.database)
            if service.is_django:
                own_env = env | {"DJANGO_SETTINGS_MODULE": service.settings}
            else:  # a Node service: its node_modules (npm ci when package-lock.json changed), then migrate.ts
                npm_ci(REPO_ROOT / service.directory, env=env)
                own_env = env
            print(f"atrium: migrating {service.name} ...", flush=True)
            _run(service.migrate_argv(sys.executable, str(node_path(env))), own_env)
        _run(
            [sys.executable, "manage.py", "demo_setup", "--credentials", str(credentials)]
            + [f"--url={name}={url}" for name, url in urls.items()],
            env | {"DJANGO_SETTINGS_MODULE": "portal.settings"},
        )
        creds = json.loads(credentials.read_text())
        env = process_env(database_url=infra.database_url, redis_url=infra.redis_url, creds=creds, base=base)
        receiver = webhooks_demo(env, var_dir)

        # Every Procfile process in a session of its own, restarted when it exits (devtools/supervisor.py):
        # a Ctrl-C (or SIGTERM) reaches only this runner, which stops them all, then the embedded servers.
        supervisor = Supervisor(procfile_entries(), env, cwd=REPO_ROOT)

        def processes_changed() -> None:
            state_write(var_dir, {**state, "processes": supervisor.pids()})

        supervisor.on_change = processes_changed

        def stop(signum: int, frame: object) -> None:
            if not supervisor.stopping:
                print("\natrium: stopping every process ...", flush=True)
            supervisor.stop()  # a second Ctrl-C kills at once

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        supervisor.start()
        started = supervisor
        ready = _wait_ready(urls, ports, time.monotonic() + 120, supervisor)
        if supervisor.stopping:
            supervisor.wait()
            return 0
        postgres_where = f"embedded ({var_dir}/dev/postgres)" if infra.embedded_postgres else "external (DATABASE_URL)"

        def web(name: str, line: str) -> str:
            return f"  {name:<9} {line}" if name in ready else f"  {name:<9} {urls[name]} is not answering yet"

        banner = [
            "",
            "=" * 72,
            "Atrium is up."
            if len(ready) == len(urls)
            else "Atrium started, but not every service answers yet (see logs above).",
            web("portal", f"{urls['portal']}/admin/   (API docs {urls['portal']}/api/docs)"),
            f"  catalog   {urls['portal']}/admin/catalog/overview/" if "portal" in ready else None,
            f"  jobs      {urls['portal']}/admin/jobs/   (schedule {urls['portal']}/admin/jobs/schedule/)"
            if "portal" in ready
            else None,
            *(
                web(s.name, f"{urls[s.name]}/api/docs   (admin {urls[s.name]}/admin/, sign in at the portal)")
                if s.is_django
                else web(s.name, f"{urls[s.name]}/api/docs   ({s.runtime}: {s.directory})")
                for s in SERVICES
                if s.name != "portal"
            ),
            f"  receiver  {receiver}   (demo: subscribed to payment.*, logs each delivery it verifies)"
            if receiver
            else None,
            f"  admin     username={creds['admin']['username']}  password={creds['admin']['password']}",
            f"  client    client_id={creds['client']['client_id']}",
            f"            client_secret={creds['client']['client_secret']}",
            f"  token     curl -s {urls['portal']}/api/v1/auth/token -d grant_type=client_credentials \\",
            f"              -d client_id={creds['client']['client_id']} -d client_secret=... -d audience=ledger",
            f"  postgres  {postgres_where}",
            f"  redis     {infra.redis_url}{' (embedded)' if infra.embedded_redis else ''}",
            f"  saved to  {credentials}",
            "  status    ./bin/atrium status;  commands: ./bin/atrium manage <process> <command> (e.g. portal shell)",
            "A process that exits is restarted (1 s, doubling to 30 s). Press Ctrl-C to stop every process.",
            "=" * 72,
            "",
        ]
        print("\n".join(line for line in banner if line is not None), flush=True)
        supervisor.wait()
        return 0 if supervisor.stopping else 1  # 1: the supervisor itself failed
    finally:
        if started is not None and not started.wait(0):  # a bug above: never leave the processes behind
            started.stop()
            started.wait()
        state_remove(var_dir)
        print("atrium: stopping infrastructure ...", flush=True)
        infra.stop()
