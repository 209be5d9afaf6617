"""``make fleet``: a rehearsal of Atrium deployed as Kubernetes would run it, with real parts on one machine.

Run from the repository root::

    .venv/bin/python -m devtools.fleet [--short] [--rate 100] [--reads 50] [--baseline 30] [--keep] …

PostgreSQL and Redis are external when ``DATABASE_URL``/``REDIS_URL`` are set (the fleet's databases,
``fleet_<service>``, are dropped and created on that server, migrated by each service's ``manage.py`` and dropped
at the end unless ``--keep``; the Redis database of ``REDIS_URL`` is the fleet's broker), otherwise embedded
(``devtools.infra``). Every process is a Procfile line, as in production (``ATRIUM_ENV=production``):

* two instances of each web service (portal, ledger, payments, webhooks: gunicorn, ``--web-workers`` x
  ``--web-threads``) behind HAProxy (``devtools/haproxy.py``): one frontend per service is its address, which every
  other process uses (``LEDGER_URL``, the portal's JWKS and token URLs, the catalog) — a Kubernetes Service;
* two payments and two ledger Celery workers (separate nodes), the portal, audit and webhooks workers, beat,
  the four outbox relays, the job monitor and the webhooks dispatcher.

A load generator (``devtools/fleet_load.py``, its own process) offers ``--rate`` payments/s and ``--reads`` ledger
reads/s through HAProxy and records every request. After a baseline window, the phases run one at a time:

1. ``rolling``: each instance of the ledger, then payments, then the portal is drained in HAProxy (the endpoint
   removed), sent SIGTERM (gunicorn finishes what it has in hand), started again on its port, ready, put back,
   then the next one;
2. ``node-loss``: one ledger instance (its whole process group) and one payments worker are SIGKILLed at once;
   HAProxy's view of the instance is polled; both are replaced after the window;
3. ``scale-out``: at ``--scale-rate``, a third payments worker joins halfway through;
4. ``isolation``: the webhooks service (both instances, its worker, dispatcher and relay) is stopped.

Then the payments drain, and every payment answered 201 is checked in the fleet's databases: final (settled,
rejected or failed), settled at most once, and each settled one with exactly one posted ledger transaction (by
reference). The report (a table, and JSON under ``$ATRIUM_VAR_DIR/fleet/``) gives per phase the requests sent and
failed (by kind), payments created/settled/lost/double-settled, p99 create→settled, and the targets: the exit
status is 1 if one is missed. ``--short`` is the CI rehearsal: the ledger's rolling upgrade and one SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from devtools.haproxy import CHECK_FALL, CHECK_INTER_MS, Backend, HAProxy
from devtools.infra import (
    REPO_ROOT,
    Infra,
    database_create,
    database_drop,
    database_url_with_name,
    free_port,
    infra_start,
    venv_env,
)
from devtools.loadkit import broker_purge, cpu_by_session, cpu_delta, ledger_accounts, machine_ticks, percentile
from devtools.processes import process_group_stop
from devtools.registry import SERVICES, service_get
from devtools.state import var_dir_get
from devtools.supervisor import ProcfileEntry, command_argv, procfile_read

WEB = ("portal", "ledger", "payments", "webhooks")
FINAL = ("settled", "rejected", "failed", "canceled")
OPEN = ("created", "screening", "processing")
OPEN_RECENT_SQL = (
    "SELECT count(*) FROM payments_payment WHERE status = ANY(%s) AND created_at > now() - interval '180 seconds'"
)
P99_TARGET = 2.0
# HAProxy marks a dead server DOWN after `fall` failed checks `inter` apart; one more interval of slack for the
# check that was in flight when the instance died.
ROUTE_BOUND = (CHECK_FALL + 1) * CHECK_INTER_MS / 1000
SWEEP_SECONDS = 5  # beat's payments.sweep (workers/beat.py)
BATCH_SECONDS = 2  # one batch carried through, on a busy machine
ISOLATION_TOLERANCE = 0.10  # settled/s within 10 % of the baseline's


def log(message: str) -> None:
    print(f"fleet {time.strftime('%H:%M:%S')} {message}", flush=True)


# --------------------------------------------------------------------------------------------- processes


@dataclass
class Instance:
    """One process of the fleet: a Procfile line with its own environment (a pod)."""

    name: str
    entry: ProcfileEntry
    env: dict[str, str]
    extra: list[str] = field(default_factory=list)
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    service: str = ""  # the web service it serves (HAProxy backend), if any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Fleet:
    """Every process started, each in a session of its own, stopped by its process group."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.entries = {e.name: e for e in procfile_read(REPO_ROOT / "Procfile")}
        self.instances: dict[str, Instance] = {}

    def add(self, name: str, entry: str, *, extra: list[str] | None = None, service: str = "") -> Instance:
        env = dict(self.env)
        port = None
        if service:
            port = free_port()
            env[service_get(service).port_var] = str(port)
        instance = Instance(name, self.entries[entry], env, extra or [], port, service=service)
        self.instances[name] = instance
        return instance

    def start(self, instance: Instance) -> None:
        argv, env = command_argv(instance.entry.command, instance.env)
        instance.log = self.logs / f"{instance.name}.log"
        with instance.log.open("ab") as out:
            out.write(f"--- {dt.datetime.now(dt.UTC).isoformat()} start\n".encode())
            out.flush()
            instance.proc = subprocess.Popen(
                [*argv, *instance.extra],
                env=env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, instance: Instance, timeout: float = 60) -> float:
        """Poll the instance's own ``/health/ready`` (not through HAProxy) until it answers 200."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if not instance.alive():
                raise RuntimeError(f"{instance.name} exited:\n{tail(instance)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{instance.url}/health/ready", timeout=2).status_code == 200:
                    return time.monotonic() - began
            time.sleep(0.1)
        raise TimeoutError(f"{instance.name} not ready after {timeout:.0f} s:\n{tail(instance)}")

    def terminate(self, instance: Instance, timeout: float = 30) -> float:
        """SIGTERM to the process (what the kubelet sends a container's PID 1), wait for it; seconds it took."""
        began = time.monotonic()
        if instance.alive():
            assert instance.proc is not None
            os.kill(instance.proc.pid, signal.SIGTERM)
            try:
                instance.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{instance.name} still running {timeout:.0f} s after SIGTERM: killed")
            process_group_stop(instance.proc, 1)  # anything left in its group
        return time.monotonic() - began

    def kill(self, instance: Instance) -> None:
        """SIGKILL the whole process group (a node gone: no handler runs, nothing is finished)."""
        assert instance.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(instance.proc.pid, signal.SIGKILL)
        instance.proc.wait(10)

    def stop_all(self) -> None:
        for instance in reversed(list(self.instances.values())):
            if instance.proc is not None:
                process_group_stop(instance.proc, 20)


def _owner_pid(owner: str | None) -> int | None:
    """The process id in a payments lease owner token (``node:pid:random``)."""
    parts = (owner or "").split(":")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def tail(instance: Instance, chars: int = 3000) -> str:
    if instance.log is None or not instance.log.exists():
        return ""
    return instance.log.read_text(errors="replace")[-chars:]


# --------------------------------------------------------------------------------------------- set-up


def _keys() -> dict[str, str]:
    """The secrets production requires: Django's key, the portal's token and ID-token signing keys, the webhooks
    service's secret-encryption key."""
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    return {
        "SECRET_KEY": secrets.token_urlsafe(48)[:64],
        "JWT_PRIVATE_KEY": ed25519.Ed25519PrivateKey.generate().private_bytes(pem, pkcs8, none).decode(),
        "OIDC_PRIVATE_KEY": rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(pem, pkcs8, none)
        .decode(),
        "WEBHOOKS_SECRET_KEYS": Fernet.generate_key().decode(),
    }


def _clean_env() -> dict[str, str]:
    """This environment without what would point a process elsewhere (the developer's or the test runner's
    databases, settings module, environment name)."""
    env = venv_env(dict(os.environ))
    for name in list(env):
        if name.endswith("_DATABASE_URL") or name.endswith("_PORT") or name.endswith("_URL"):
            env.pop(name)
    for name in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DEBUG", "ATRIUM_ENV", "TEST_DATABASE_NAME"):
        env.pop(name, None)
    return env


def manage(service: str, env: dict[str, str], *args: str) -> str:
    entry = service_get(service)
    done = subprocess.run(
        [sys.executable, entry.manage, *args],
        env={**env, "DJANGO_SETTINGS_MODULE": entry.settings},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{service} manage.py {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def token(token_url: str, client: dict[str, str], audience: str) -> str:
    response = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "audience": audience,
        },
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["access_token"]


# --------------------------------------------------------------------------------------------- the run


@dataclass
class Phase:
    name: str
    start: float = 0.0  # epoch seconds
    end: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    ticks: tuple[int, int] = (0, 0)
    lb: dict[str, dict[str, int]] = field(default_factory=dict)


class Rehearsal:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = time.strftime("%Y%m%d-%H%M%S")
        self.var_dir = var_dir_get() / "fleet"
        self.dir = self.var_dir / self.run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.infra: Infra | None = None
        self.fleet: Fleet | None = None
        self.haproxy: HAProxy | None = None
        self.load: subprocess.Popen[bytes] | None = None
        self.databases: dict[str, str] = {}
        self.phases: list[Phase] = []
        self.fronts: dict[str, int] = {}
        self.worker_serial = 0
        self.lease_seconds = 60.0

    # --- helpers ----------------------------------------------------------------------------------------
    def db(self, service: str) -> str:
        assert self.infra is not None
        return database_url_with_name(self.infra.database_url, self.databases[service])

    def sql(self, service: str, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db(service), autocommit=True) as conn:
            return conn.execute(query, params or []).fetchall()

    def rates(self, payments: float, reads: float) -> None:
        assert self.load is not None
        assert self.load.stdin is not None
        self.load.stdin.write(json.dumps({"payments": payments, "reads": reads}).encode() + b"\n")
        self.load.stdin.flush()

    def steady(self, timeout: float = 60.0) -> float:
        """Wait until the payments in flight are about one second's worth (the backlog a phase left is gone), so
        that each phase starts from a steady state; seconds it took."""
        began = time.monotonic()
        calm = 0
        while time.monotonic() - began < timeout:
            # The last minutes only: the status index holds an entry per status a payment went through until
            # vacuum, so counting every open payment reads them all (~0.2 s at 30,000 payments, a load of its own).
            open_n = self.sql("payments", OPEN_RECENT_SQL, [list(OPEN)])
            calm = calm + 1 if open_n[0][0] <= max(self.args.rate, 20) else 0
            if calm >= 2:
                break
            time.sleep(1.5)
        waited = time.monotonic() - began
        if waited > 3:
            log(f"  steady after {waited:.0f} s")
        return waited

    def phase(self, name: str, *, steady: bool = True) -> Phase:
        steady = self.steady() if steady else 0.0
        phase = Phase(name, start=time.time())
        phase.facts["steady_wait_s"] = round(steady, 1)
        phase.cpu = self.cpu()
        phase.ticks = machine_ticks()
        if self.haproxy is not None:
            self.haproxy.clear_maxima()
            phase.lb = self.haproxy.backend_counters()
        self.phases.append(phase)
        log(f"phase {name}")
        return phase

    def close(self, phase: Phase) -> None:
        phase.end = time.time()
        used = cpu_delta(phase.cpu, self.cpu())
        seconds = max(phase.end - phase.start, 1e-9)
        # Cores busy, by part (2.0 = both cores of this machine the whole window).
        phase.facts["cores_busy"] = {k: round(v / seconds, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
        phase.facts["cores_busy_fleet"] = round(sum(used.values()) / seconds, 2)
        phase.facts["machine_load_1m"] = round(os.getloadavg()[0], 1)
        busy, total = machine_ticks()
        phase.facts["machine_busy"] = round((busy - phase.ticks[0]) / max(1, total - phase.ticks[1]), 2)
        if self.haproxy is not None:
            lb = {}
            for service, now in self.haproxy.backend_counters().items():
                then = phase.lb.get(service, {})
                row = {k: now[k] - then.get(k, 0) for k in HAProxy.COUNTERS}
                row.update({k: now[k] for k in HAProxy.MAXIMA})
                lb[service] = {k: v for k, v in row.items() if v}
            phase.facts["haproxy"] = lb

    def cpu(self) -> dict[int, tuple[str, float]]:
        """CPU seconds so far of every process of the fleet, by part (a Procfile name), PostgreSQL and Redis."""
        sessions: dict[int, str] = {}
        for instance in self.fleet.instances.values() if self.fleet else []:
            if instance.proc is not None:
                sessions[instance.proc.pid] = instance.name.rsplit("-", 1)[0]
        if self.haproxy is not None and self.haproxy.proc is not None:
            sessions[self.haproxy.proc.pid] = "haproxy"
        if self.load is not None:
            sessions[self.load.pid] = "load generator"
        return cpu_by_session(sessions)

    def web(self, service: str) -> list[Instance]:
        assert self.fleet is not None
        return [i for i in self.fleet.instances.values() if i.service == service]

    def payments_worker(self) -> Instance:
        assert self.fleet is not None
        self.worker_serial += 1
        node = f"payments-{self.worker_serial}@%h"
        worker = self.fleet.add(
            f"worker_payments-{self.worker_serial}",
            "worker_payments",
            extra=["-n", node, "-c", str(self.args.worker_concurrency), "--without-gossip", "-l", "WARNING"],
        )
        worker.env["LOG_LEVEL"] = "INFO"  # each drain's batches: what the report's latencies come from
        return worker

    # --- set-up -----------------------------------------------------------------------------------------
    def setup(self) -> None:
        args = self.args
        log(f"run {self.run_id}: logs and report under {self.dir}")
        self.infra = infra_start("fleet", var_dir=self.var_dir.parent)
        log(
            f"postgres {'embedded' if self.infra.embedded_postgres else 'external'}, "
            f"redis {'embedded' if self.infra.embedded_redis else 'external'} ({self.infra.redis_url})"
        )
        purged = broker_purge(self.infra.redis_url)
        if purged:
            log(f"emptied {purged} queue keys left in the fleet's Redis database")
        for service in WEB:
            name = f"{args.database_prefix}_{service}"
            database_drop(self.infra.database_url, name)
            database_create(self.infra.database_url, name)
            self.databases[service] = name
        self.fronts = {service: free_port() for service in WEB}
        urls = {service: f"http://127.0.0.1:{port}" for service, port in self.fronts.items()}
        env = _clean_env()
        env.update(_keys())
        env.update(
            ATRIUM_ENV="production",
            ATRIUM_VAR_DIR=str(self.dir / "var"),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SECURE_SSL_REDIRECT="false",
            BIND_HOST="127.0.0.1",
            REDIS_URL=self.infra.redis_url,
            WEB_CONCURRENCY=str(args.web_workers),
            WEB_THREADS=str(args.web_threads),
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="WARNING",
            JOBS_STREAM=f"atrium:jobs:fleet-{self.run_id}",
            JOBS_MONITOR_CONSUMER=f"fleet-{self.run_id}",
            AUDIT_SIGNING_KEY_FILE="",
            ATRIUM_OUTBOUND_ALLOW_NETWORKS="127.0.0.1/32",
            WEBHOOKS_ALLOWED_NETWORKS="127.0.0.1/32",
            # Every service reaches every other one through HAProxy only.
            JWT_JWKS_URL=f"{urls['portal']}/.well-known/jwks.json",
            ATRIUM_TOKEN_URL=f"{urls['portal']}/api/v1/auth/token",
            ATRIUM_PORTAL_URL=urls["portal"],
            # As many payments drainers as there will be workers (scale-out adds a third).
            PAYMENTS_DRAINERS="3",
            **{f"{service.upper()}_URL": url for service, url in urls.items()},
            **{s.database_url_var: self.db(s.name) for s in SERVICES if s.name in self.databases},
        )
        log("migrating " + ", ".join(WEB) + " …")
        for service in WEB:
            manage(service, env, "migrate", "--noinput", "-v", "0")
        credentials = self.dir / "credentials.json"
        # The machine clients (each service's own, and one for the load) in the portal's database; the command
        # refuses production, so it alone runs as dev — it writes rows, nothing else.
        manage(
            "portal",
            {**env, "ATRIUM_ENV": "dev"},
            "demo_setup",
            "--credentials",
            str(credentials),
            *[f"--url={service}={url}" for service, url in urls.items()],
        )
        self.creds = json.loads(credentials.read_text())
        for service, own in self.creds["services"].items():
            env[f"{service.upper()}_CLIENT_ID"] = own["client_id"]
            env[f"{service.upper()}_CLIENT_SECRET"] = own["client_secret"]
        self.env = env
        self.urls = urls
        self.lease_seconds = float(
            manage(
                "payments",
                env,
                "shell",
                "-c",
                "from django.conf import settings; print(settings.PAYMENTS_LEASE_SECONDS)",
            ).split()[-1]
        )

        self.fleet = fleet = Fleet(env, self.dir)
        webs = [fleet.add(f"{service}-{n}", service, service=service) for service in WEB for n in (1, 2)]
        self.haproxy = HAProxy(
            [
                Backend(
                    s,
                    self.fronts[s],
                    {i.name: i.port or 0 for i in self.web(s)},
                    maxconn=args.web_workers * args.web_threads,
                )
                for s in WEB
            ],
            self.dir,
        )
        self.haproxy.start()
        log(f"haproxy: {', '.join(f'{s} :{p}' for s, p in self.fronts.items())}")
        for instance in webs:
            fleet.start(instance)
        for instance in webs:
            fleet.wait_ready(instance, 120)
            self.haproxy.wait_status(instance.service, instance.name, "UP", 20)
        log("web instances up: " + ", ".join(f"{i.name} :{i.port}" for i in webs))
        workers = [self.payments_worker(), self.payments_worker()]
        common = ["--without-gossip", "-l", "WARNING"]
        for n in (1, 2):
            workers.append(
                fleet.add(f"worker_ledger-{n}", "worker_ledger", extra=["-n", f"ledger-{n}@%h", "-c", "1", *common])
            )
        for queue in ("portal", "audit", "webhooks"):
            workers.append(fleet.add(f"worker_{queue}", f"worker_{queue}", extra=["-c", "1", *common]))
        others = [fleet.add(name, name) for name in ("beat", "jobs_monitor", "dispatcher_webhooks")]
        others += [fleet.add(f"relay_{service}", f"relay_{service}") for service in WEB]
        for instance in [*workers, *others]:
            fleet.start(instance)
        log(f"{len(fleet.instances)} processes started")

        # The load: accounts in the ledger and tokens, both through HAProxy, as any client.
        client = self.creds["client"]
        ledger_token = token(env["ATRIUM_TOKEN_URL"], client, "ledger")
        payments_token = token(env["ATRIUM_TOKEN_URL"], client, "payments")
        sources, destinations = ledger_accounts(urls["ledger"], ledger_token, args.accounts)
        config = self.dir / "load.json"
        self.requests_path = self.dir / "requests.jsonl"
        config.write_text(
            json.dumps(
                {
                    "payments_url": urls["payments"],
                    "ledger_url": urls["ledger"],
                    "payments_token": payments_token,
                    "ledger_token": ledger_token,
                    "sources": sources,
                    "destinations": destinations,
                    "out": str(self.requests_path),
                }
            )
        )
        with (self.dir / "load.log").open("ab") as out:
            self.load = subprocess.Popen(
                [sys.executable, "-m", "devtools.fleet_load", str(config)],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=venv_env(dict(os.environ)),
                start_new_session=True,
            )
        for instance in [*workers, *others]:
            if not instance.alive():
                raise RuntimeError(f"{instance.name} exited:\n{tail(instance)}")

    # --- phases -----------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        args = self.args
        log(f"warm-up {args.warmup:.0f} s at {args.rate:.0f} payments/s and {args.reads:.0f} reads/s")
        self.rates(args.rate, args.reads)
        time.sleep(args.warmup)

    def baseline(self) -> None:
        phase = self.phase("baseline")
        time.sleep(self.args.baseline)
        self.close(phase)

    def rolling(self, services: tuple[str, ...]) -> None:
        assert self.fleet is not None
        assert self.haproxy is not None
        phase = self.phase("rolling")
        steps = []
        for service in services:
            for instance in self.web(service):
                step: dict[str, Any] = {"instance": instance.name, "began": time.time()}
                began = time.monotonic()
                # The endpoint goes: no new requests (health checks go on), then the in-flight ones finish.
                self.haproxy.server_state(service, instance.name, "drain")
                while self.haproxy.sessions(service, instance.name) and time.monotonic() - began < 10:
                    time.sleep(0.05)
                step["drained_s"] = round(time.monotonic() - began, 2)
                step["stopped_s"] = round(self.fleet.terminate(instance), 2)
                self.fleet.start(instance)
                step["ready_s"] = round(self.fleet.wait_ready(instance, 60), 2)
                self.haproxy.server_state(service, instance.name, "ready")
                step["up_s"] = round(self.haproxy.wait_status(service, instance.name, "UP", 20), 2)
                step["total_s"] = round(time.monotonic() - began, 2)
                step["ended"] = time.time()
                # Paced like a Deployment's minReadySeconds: the next instance goes once the new one has served a
                # few seconds and the backlog its restart caused is gone.
                time.sleep(self.args.settle)
                step["steady_s"] = round(self.steady(30), 1)
                log(f"  {instance.name}: " + ", ".join(f"{k} {v}" for k, v in step.items() if k.endswith("_s")))
                steps.append(step)
        phase.facts["steps"] = steps
        self.close(phase)

    def node_loss(self) -> None:
        assert self.fleet is not None
        assert self.haproxy is not None
        phase = self.phase("node-loss")
        time.sleep(self.args.settle)
        ledger = self.web("ledger")[-1]
        worker = next(i for i in reversed(self.fleet.instances.values()) if i.entry.name == "worker_payments")
        leased = self.victim_leases(worker, self.args.lease_wait)
        killed_at = time.time()
        began = time.monotonic()
        self.fleet.kill(ledger)
        self.fleet.kill(worker)
        log(f"  SIGKILL {ledger.name} and {worker.name}")
        status_seen = []
        down_after = None
        while time.monotonic() - began < self.args.node_loss:
            status = self.haproxy.server_status("ledger", ledger.name)
            if not status_seen or status_seen[-1][1] != status:
                status_seen.append((round(time.monotonic() - began, 3), status))
            if down_after is None and status.startswith("DOWN"):
                down_after = time.monotonic() - began
            time.sleep(0.02)
        phase.facts.update(
            killed=[ledger.name, worker.name],
            killed_at=killed_at,
            leased_at_kill=leased,
            down_after_s=round(down_after, 3) if down_after is not None else None,
            haproxy_states=status_seen,
        )
        log(f"  haproxy marked {ledger.name} DOWN after {down_after} s; replacing both")
        # The Deployment replaces both pods (the worker as a new node, as a new pod would be).
        self.fleet.start(ledger)
        self.fleet.wait_ready(ledger, 60)
        self.haproxy.wait_status("ledger", ledger.name, "UP", 20)
        replacement = self.payments_worker()
        self.fleet.start(replacement)
        phase.facts["replacement"] = replacement.name
        time.sleep(self.args.settle)
        self.close(phase)

    def victim_leases(self, worker: Instance, timeout: float) -> list[str]:
        """Wait (up to ``timeout``) until ``worker`` holds a lease — its own process's claim, by the ``lease_owner``
        token ``node:pid:…`` when the payments service keeps one — and return those payments' ids, so that the
        kill leaves work behind; without owners (or if none comes), the payments any worker holds."""
        assert worker.proc is not None
        pids = {worker.proc.pid} | {c.pid for c in psutil.Process(worker.proc.pid).children(recursive=True)}
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.db("payments"), autocommit=True) as conn:
            try:
                conn.execute("SELECT lease_owner FROM payments_payment LIMIT 0")
            except psycopg.errors.UndefinedColumn:
                rows = conn.execute(
                    "SELECT id FROM payments_payment WHERE status = ANY(%s) AND lease_until > now()", [list(OPEN)]
                ).fetchall()
                return [row[0] for row in rows]
            while True:
                rows = conn.execute(
                    "SELECT id, lease_owner FROM payments_payment WHERE status = ANY(%s) AND lease_until > now() "
                    "AND created_at > now() - interval '180 seconds'",
                    [list(OPEN)],
                ).fetchall()
                mine = [payment for payment, owner in rows if _owner_pid(owner) in pids]
                if mine or time.monotonic() > deadline:
                    return mine or [row[0] for row in rows]
                time.sleep(0.1)

    def scale_out(self) -> None:
        assert self.fleet is not None
        args = self.args
        self.steady()
        self.rates(args.scale_rate, args.reads)
        time.sleep(args.settle)  # the new rate's backlog settles in
        before = self.phase("scale-out:2-workers", steady=False)
        time.sleep(args.scale_window)
        self.close(before)
        third = self.payments_worker()
        self.fleet.start(third)
        log(f"  {third.name} joins")
        time.sleep(args.settle)  # the new worker starts (a few seconds of CPU)
        after = self.phase("scale-out:3-workers", steady=False)
        time.sleep(args.scale_window)
        self.close(after)
        self.rates(args.rate, args.reads)
        # Scale in again (SIGTERM: Celery's warm shutdown finishes the batch in hand), the isolation phase is
        # compared with the baseline's two workers.
        self.fleet.terminate(third, 60)
        time.sleep(args.settle)

    def isolation(self) -> None:
        assert self.fleet is not None
        self.steady()
        stopped = [*self.web("webhooks")]
        stopped += [self.fleet.instances[n] for n in ("worker_webhooks", "dispatcher_webhooks", "relay_webhooks")]
        for instance in stopped:
            self.fleet.terminate(instance, 30)
        log("  webhooks stopped: " + ", ".join(i.name for i in stopped))
        phase = self.phase("isolation")  # measured from when the webhooks service is gone
        phase.facts["stopped"] = [i.name for i in stopped]
        time.sleep(self.args.isolation)
        self.close(phase)

    def finish_load(self) -> None:
        assert self.load is not None
        assert self.load.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.load.stdin.write(b'{"stop": true}\n')
            self.load.stdin.close()
        self.load.wait(30)

    # --- the check --------------------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        requests = [json.loads(line) for line in self.requests_path.read_text().splitlines() if line.strip()]
        ids = [r["id"] for r in requests if r["k"] == "pay" and r["s"] == 201]
        log(f"{len(requests)} requests recorded, {len(ids)} payments created; waiting for them to be final …")
        deadline = time.monotonic() + self.args.drain
        while True:
            open_n = self.sql("payments", "SELECT count(*) FROM payments_payment WHERE status = ANY(%s)", [list(OPEN)])
            if not open_n[0][0] or time.monotonic() > deadline:
                break
            time.sleep(1)
        rows = self.sql(
            "payments",
            "SELECT id, status, extract(epoch FROM created_at), status_history FROM payments_payment "
            "WHERE id = ANY(%s)",
            [ids],
        )
        payments: dict[str, dict[str, Any]] = {}
        for payment_id, status, created, history in rows:
            settled = [h for h in history if h["status"] == "settled"]
            settled_at = (
                dt.datetime.fromisoformat(settled[0]["at"].replace("Z", "+00:00")).timestamp() if settled else None
            )
            final_at = (
                dt.datetime.fromisoformat(history[-1]["at"].replace("Z", "+00:00")).timestamp()
                if history and status in FINAL
                else None
            )
            payments[payment_id] = {
                "status": status,
                "final_at": final_at,
                "created": float(created),
                "settled_at": settled_at,
                "settled_times": len(settled),
            }
        posted = dict(
            self.sql(
                "ledger",
                "SELECT reference, count(*) FROM ledger_transaction WHERE status = 'posted' AND reference = ANY(%s) "
                "GROUP BY reference",
                [ids],
            )
        )
        for payment_id, payment in payments.items():
            payment["posted"] = posted.get(payment_id, 0)
        return {"requests": requests, "ids": ids, "payments": payments}

    # --- the report -------------------------------------------------------------------------------------
    def report(self, seen: dict[str, Any]) -> dict[str, Any]:
        requests, payments = seen["requests"], seen["payments"]
        created_ids = set(seen["ids"])
        phases_out = []
        for phase in self.phases:
            mine = [r for r in requests if phase.start <= r["t"] < phase.end]
            failed: dict[str, int] = {}
            for r in mine:
                if r["e"]:
                    failed[r["e"]] = failed.get(r["e"], 0) + 1
            ids = [r["id"] for r in mine if r["k"] == "pay" and r["s"] == 201]
            mine_payments = [payments.get(i) for i in ids]
            latencies = sorted(
                p["settled_at"] - p["created"] for p in mine_payments if p is not None and p["settled_at"] is not None
            )
            window = max(phase.end - phase.start, 1e-9)
            settled_in_window = sum(
                1
                for p in payments.values()
                if p["settled_at"] is not None and phase.start <= p["settled_at"] < phase.end
            )
            row = {
                "phase": phase.name,
                "seconds": round(window, 1),
                "requests": len(mine),
                "payments_sent": sum(1 for r in mine if r["k"] == "pay"),
                "reads_sent": sum(1 for r in mine if r["k"] != "pay"),
                "failed": sum(failed.values()),
                "failed_by_kind": failed,
                "created": len(ids),
                "settled": sum(1 for p in mine_payments if p is not None and p["status"] == "settled"),
                "other_final": sum(1 for p in mine_payments if p is not None and p["status"] in FINAL[1:]),
                "lost": sum(1 for p in mine_payments if p is None or p["status"] not in FINAL),
                "double_settled": sum(
                    1 for p in mine_payments if p is not None and (p["settled_times"] > 1 or p["posted"] > 1)
                ),
                "p50_s": round(percentile(latencies, 0.50), 3) if latencies else None,
                "p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
                "max_s": round(latencies[-1], 3) if latencies else None,
                "settled_per_s": round(settled_in_window / window, 1),
                "failures_sample": [r for r in mine if r["e"]][:5],
                **phase.facts,
            }
            if phase.name == "node-loss" and phase.facts.get("killed_at"):
                killed_at = phase.facts["killed_at"]
                late = [r["t"] + r["d"] - killed_at for r in requests if r["e"] and r["t"] + r["d"] >= killed_at]
                late = [x for x in late if x <= phase.end - killed_at]
                row["last_failure_after_s"] = round(max(late), 3) if late else 0.0
                leased = phase.facts.get("leased_at_kill") or []
                finals = [payments[i]["final_at"] for i in leased if i in payments]
                row["leased_at_kill"] = len(leased)
                row["leased_unfinished"] = sum(1 for f in finals if f is None) + len(leased) - len(finals)
                row["leased_final_after_s"] = (
                    round(max(f for f in finals if f is not None) - killed_at, 2) if any(finals) else None
                )
            for step in row.get("steps", []):
                # The payments created while this instance was out or coming back: which restart costs what.
                during = sorted(
                    p["settled_at"] - p["created"]
                    for p in mine_payments
                    if p is not None and p["settled_at"] is not None and step["began"] <= p["created"] < step["ended"]
                )
                step["p99_s"] = round(percentile(during, 0.99), 3) if during else None
                step["max_s"] = round(during[-1], 3) if during else None
            phases_out.append(row)
        every = list(payments.values())
        totals = {
            "requests": len(requests),
            "failed": sum(1 for r in requests if r["e"]),
            "created": len(created_ids),
            "settled": sum(1 for p in every if p["status"] == "settled"),
            "rejected_or_failed": sum(1 for p in every if p["status"] in FINAL[1:]),
            "lost": len(created_ids) - len(payments) + sum(1 for p in every if p["status"] not in FINAL),
            "double_settled": sum(1 for p in every if p["settled_times"] > 1 or p["posted"] > 1),
            "settled_without_posting": sum(1 for p in every if p["status"] == "settled" and p["posted"] != 1),
            "posted_without_settling": sum(1 for p in every if p["status"] != "settled" and p["posted"]),
        }
        return {"phases": phases_out, "totals": totals}

    def targets(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        by = {p["phase"]: p for p in result["phases"]}
        totals = result["totals"]
        out: list[dict[str, Any]] = []

        def target(name: str, value: Any, goal: str, met: bool) -> None:
            out.append({"target": name, "value": value, "goal": goal, "met": bool(met)})

        if "rolling" in by:
            rolling = by["rolling"]
            target("rolling: failed API requests", rolling["failed"], "0", rolling["failed"] == 0)
            target("rolling: lost payments", rolling["lost"], "0", rolling["lost"] == 0)
            target("rolling: double-settled", rolling["double_settled"], "0", rolling["double_settled"] == 0)
            p99 = rolling["p99_s"]
            target("rolling: p99 create→settled (s)", p99, f"< {P99_TARGET}", p99 is not None and p99 < P99_TARGET)
        if "baseline" in by:
            p99 = by["baseline"]["p99_s"]
            target("baseline: p99 create→settled (s)", p99, f"< {P99_TARGET}", p99 is not None and p99 < P99_TARGET)
        if "node-loss" in by:
            loss = by["node-loss"]
            down = loss.get("down_after_s")
            target(
                "node loss: marked DOWN after (s)", down, f"≤ {ROUTE_BOUND}", down is not None and down <= ROUTE_BOUND
            )
            last = loss.get("last_failure_after_s")
            target(
                "node loss: last failed request after (s)",
                last,
                f"≤ {ROUTE_BOUND}",
                last is not None and last <= ROUTE_BOUND,
            )
            # A killed worker's lease runs out after PAYMENTS_LEASE_SECONDS; the next drain or the sweeper (beat,
            # every SWEEP_SECONDS) takes it at once; then one batch's time.
            bound = self.lease_seconds + SWEEP_SECONDS + BATCH_SECONDS
            after = loss.get("leased_final_after_s")
            target(
                "node loss: payments leased by the killed worker final after (s)",
                after,
                f"≤ {bound:.0f} (lease {self.lease_seconds:.0f} + sweep {SWEEP_SECONDS} + {BATCH_SECONDS}), all final",
                loss.get("leased_unfinished", 1) == 0 and (after is None or after <= bound),
            )
            target("node loss: lost payments", loss["lost"], "0", loss["lost"] == 0)
            target("node loss: double-settled", loss["double_settled"], "0", loss["double_settled"] == 0)
        if "isolation" in by and "baseline" in by:
            iso, base = by["isolation"], by["baseline"]
            ratio = iso["settled_per_s"] / base["settled_per_s"] if base["settled_per_s"] else 0.0
            target(
                "isolation: settled/s vs baseline",
                f"{iso['settled_per_s']} vs {base['settled_per_s']}",
                f"within {ISOLATION_TOLERANCE:.0%}",
                abs(ratio - 1) <= ISOLATION_TOLERANCE,
            )
            target("isolation: failed API requests", iso["failed"], "0", iso["failed"] == 0)
            p99 = iso["p99_s"]
            target("isolation: p99 create→settled (s)", p99, f"< {P99_TARGET}", p99 is not None and p99 < P99_TARGET)
        target("all: lost payments", totals["lost"], "0", totals["lost"] == 0)
        target("all: double-settled", totals["double_settled"], "0", totals["double_settled"] == 0)
        target(
            "all: settled with exactly one posted ledger transaction",
            totals["settled_without_posting"],
            "0 exceptions",
            totals["settled_without_posting"] == 0 and totals["posted_without_settling"] == 0,
        )
        return out

    # --- the whole run ----------------------------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        began = time.monotonic()
        self.setup()
        self.warm_up()
        self.baseline()
        self.rolling(("ledger",) if args.short else ("ledger", "payments", "portal"))
        self.node_loss()
        if not args.short:
            self.scale_out()
            self.isolation()
        self.finish_load()
        seen = self.check()
        result = self.report(seen)
        result["targets"] = self.targets(result)
        result["run"] = {
            "id": self.run_id,
            "short": args.short,
            "rate": args.rate,
            "reads": args.reads,
            "scale_rate": args.scale_rate,
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
            "seconds": round(time.monotonic() - began, 1),
            "embedded_postgres": self.infra.embedded_postgres if self.infra else None,
            "haproxy": {"inter_ms": CHECK_INTER_MS, "fall": CHECK_FALL, "route_bound_s": ROUTE_BOUND},
        }
        path = self.var_dir / f"report-{self.run_id}.json"
        path.write_text(json.dumps(result, indent=2, default=str))
        if args.report is not None:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(path.read_text())
        print_report(result)
        log(f"report: {path}")
        return 0 if all(t["met"] for t in result["targets"]) else 1

    def stop(self) -> None:
        if self.load is not None:
            process_group_stop(self.load, 5)
        if self.fleet is not None:
            log("stopping every process …")
            self.fleet.stop_all()
        if self.haproxy is not None:
            self.haproxy.stop()
        if self.infra is not None:
            with contextlib.suppress(Exception):
                broker_purge(self.infra.redis_url)
                import redis

                redis.Redis.from_url(self.infra.redis_url).delete(f"atrium:jobs:fleet-{self.run_id}")
            if self.args.keep:
                log("databases kept: " + ", ".join(self.databases.values()))
            else:
                for name in self.databases.values():
                    with contextlib.suppress(Exception):
                        database_drop(self.infra.database_url, name)
            self.infra.stop()


def print_report(result: dict[str, Any]) -> None:
    columns = [
        ("phase", "phase", 20),
        ("seconds", "s", 6),
        ("requests", "requests", 8),
        ("failed", "failed", 6),
        ("created", "created", 7),
        ("settled", "settled", 7),
        ("lost", "lost", 4),
        ("double_settled", "double", 6),
        ("p50_s", "p50 s", 6),
        ("p99_s", "p99 s", 6),
        ("max_s", "max s", 6),
        ("settled_per_s", "settled/s", 9),
    ]
    print()
    print(" ".join(f"{title:>{width}}" for _, title, width in columns))
    for row in result["phases"]:
        cells = []
        for key, _, width in columns:
            value = row.get(key)
            cells.append(f"{'-' if value is None else value!s:>{width}}")
        print(" ".join(cells))
        if row["failed_by_kind"]:
            print(f"{'':>20}   failed by kind: {row['failed_by_kind']}")
        for step in row.get("steps", []):
            print(
                f"{'':>20}   {step['instance']}: drained {step['drained_s']} s, stopped {step['stopped_s']} s, ready "
                f"{step['ready_s']} s, UP {step['up_s']} s; payments created meanwhile: p99 {step['p99_s']} s"
            )
        if row.get("cores_busy"):
            top = ", ".join(f"{k} {v}" for k, v in list(row["cores_busy"].items())[:7])
            print(
                f"{'':>20}   cores busy: fleet {row['cores_busy_fleet']} ({top}); machine "
                f"{row['machine_busy']:.0%} busy, load {row['machine_load_1m']}"
            )
            lb = "; ".join(f"{k}: {v}" for k, v in row.get("haproxy", {}).items() if v)
            print(f"{'':>20}   haproxy: {lb}")
        if "down_after_s" in row:
            print(
                f"{'':>20}   {' and '.join(row['killed'])} killed: HAProxy DOWN after {row['down_after_s']} s, "
                f"last failed request {row['last_failure_after_s']} s after the kill; {row['leased_at_kill']} "
                f"payments leased at the kill, all final {row['leased_final_after_s']} s after it "
                f"({row['leased_unfinished']} not)"
            )
    totals = result["totals"]
    print(
        f"\nall: {totals['requests']} requests, {totals['failed']} failed; {totals['created']} payments created, "
        f"{totals['settled']} settled, {totals['rejected_or_failed']} rejected/failed, {totals['lost']} lost, "
        f"{totals['double_settled']} double-settled; settled without exactly one posted ledger transaction: "
        f"{totals['settled_without_posting']}, posted without settling: {totals['posted_without_settling']}"
    )
    print("\ntargets:")
    for t in result["targets"]:
        print(f"  {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['value']} (goal {t['goal']})")
    print(flush=True)


def markdown(result: dict[str, Any]) -> str:
    """A report as the Markdown tables docs/deploy.md shows (``python -m devtools.fleet --markdown <report.json>``)."""
    run = result["run"]
    lines = [
        f"Run `{run['id']}` ({'--short' if run['short'] else 'full'}; {run['rate']:.0f} payments/s and "
        f"{run['reads']:.0f} reads/s offered, {run['scale_rate']:.0f}/s in the scale-out phase; {run['seconds']:.0f} s "
        f"in all):",
        "",
        "| phase | s | requests | failed | created | settled | lost | double | p50 s | p99 s | max s | settled/s "
        "| fleet cores | machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["phases"]:
        failed = str(row["failed"]) + (f" ({row['failed_by_kind']})" if row["failed_by_kind"] else "")
        cells = [
            row["phase"],
            row["seconds"],
            row["requests"],
            failed,
            row["created"],
            row["settled"],
            row["lost"],
            row["double_settled"],
            row["p50_s"],
            row["p99_s"],
            row["max_s"],
            row["settled_per_s"],
            row.get("cores_busy_fleet"),
            f"{row['machine_busy']:.0%}" if row.get("machine_busy") is not None else "-",
        ]
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    lines.append("")
    for row in result["phases"]:
        for step in row.get("steps", []):
            lines.append(
                f"- {step['instance']}: drained {step['drained_s']} s, stopped (SIGTERM → exit) {step['stopped_s']} s, "
                f"ready {step['ready_s']} s, UP in HAProxy {step['up_s']} s; p99 of the payments created meanwhile "
                f"{step.get('p99_s', '-')} s"
            )
        if "down_after_s" in row:
            lb = row.get("haproxy", {}).get("ledger", {})
            lines.append(
                f"- node loss: {' and '.join(row['killed'])} SIGKILLed; HAProxy marked the instance DOWN after "
                f"{row['down_after_s']} s; "
                + (
                    f"last failed request {row['last_failure_after_s']} s after the kill "
                    if row["last_failure_after_s"]
                    else "no request failed "
                )
                + f"(HAProxy retried {lb.get('wretr', 0)} requests, redispatched {lb.get('wredis', 0)}); "
                f"{row['leased_at_kill']} payments leased by the killed worker, all final "
                f"{row['leased_final_after_s']} s after the kill"
            )
    by = {p["phase"]: p for p in result["phases"]}
    if "scale-out:2-workers" in by and "scale-out:3-workers" in by:
        before, after = by["scale-out:2-workers"], by["scale-out:3-workers"]
        lines.append(
            f"- scale-out: settled/s {before['settled_per_s']} with 2 payments workers, {after['settled_per_s']} "
            f"with 3 (machine {before['machine_busy']:.0%} / {after['machine_busy']:.0%} busy)"
        )
    totals = result["totals"]
    lines.append(
        f"- all: {totals['requests']} requests, {totals['failed']} failed; {totals['created']} payments created, "
        f"{totals['settled']} settled, {totals['lost']} lost, {totals['double_settled']} double-settled; settled "
        f"without exactly one posted ledger transaction {totals['settled_without_posting']}, posted without settling "
        f"{totals['posted_without_settling']}"
    )
    missed = [t for t in result["targets"] if not t["met"]]
    lines.append(
        "- targets: all met"
        if not missed
        else "- targets MISSED: " + "; ".join(f"{t['target']} {t['value']} (goal {t['goal']})" for t in missed)
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--short", action="store_true", help="the CI rehearsal: the ledger's rolling upgrade, one SIGKILL"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="payments offered per second (default 100)")
    parser.add_argument("--reads", type=float, default=50.0, help="ledger reads offered per second (default 50)")
    parser.add_argument("--scale-rate", type=float, default=160.0, help="payments/s offered in the scale-out phase")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of load before the baseline")
    parser.add_argument("--baseline", type=float, default=None, help="seconds of the baseline window")
    parser.add_argument("--node-loss", type=float, default=None, help="seconds watched after the SIGKILL")
    parser.add_argument(
        "--lease-wait", type=float, default=10.0, help="seconds to wait for the victim worker to hold a lease"
    )
    parser.add_argument("--scale-window", type=float, default=20.0, help="seconds before and after the third worker")
    parser.add_argument("--isolation", type=float, default=30.0, help="seconds with the webhooks service stopped")
    parser.add_argument("--settle", type=float, default=None, help="pause between steps (seconds)")
    parser.add_argument("--drain", type=float, default=90.0, help="seconds to wait for every payment to be final")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers per instance")
    parser.add_argument("--web-threads", type=int, default=4, help="threads per gunicorn worker (default 4)")
    parser.add_argument("--worker-concurrency", type=int, default=1, help="processes per payments worker")
    parser.add_argument("--accounts", type=int, default=40, help="source and destination accounts each")
    parser.add_argument("--database-prefix", default="fleet", help="the fleet's databases: <prefix>_<service>")
    parser.add_argument("--keep", action="store_true", help="keep the fleet's databases")
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    short_or = {"warmup": (10, 5), "baseline": (30, 15), "node_loss": (10, 8), "settle": (3, 2)}
    for name, (full, short) in short_or.items():
        if getattr(args, name) is None:
            setattr(args, name, short if args.short else full)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--markdown"]:
        for path in argv[1:]:
            print(markdown(json.loads(Path(path).read_text())) + "\n")
        return 0
    args = parse_args(argv)
    rehearsal = Rehearsal(args)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return rehearsal.run()
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        rehearsal.stop()


if __name__ == "__main__":
    sys.exit(main())
