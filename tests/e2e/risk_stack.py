"""The TypeScript risk service (services/risk) as a real Node process for cross-process tests.

It runs on Node 24 (``devtools.node.node_path``), on a fresh database of its own migrated by its own
``migrate.ts``, with its own machine identity (audience ``portal``, scopes ``catalog:register audit:ingest``), and
trusts the live portal's keys. :func:`risk_rules` and :func:`risk_call` speak its API with a caller's token.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from devtools.infra import REPO_ROOT, database_create, database_url_with_name, free_port
from devtools.node import node_env, node_path, npm_ci
from portal.identity import services as identity
from tests.harness import AtriumProcess, ProcessHarness, base_env, database_server_url

RISK_DIR = REPO_ROOT / "services" / "risk"

# Rules that decide by amount alone, so a test can ask for each decision: up to 9,999 allow; from 10,000 review
# (amount_high, 40 ≥ 30); over 50,000 in the hour from one source deny (amount_high 40 + velocity_amount 50 ≥ 80).
DECIDING_RULES: dict[str, Any] = {
    "thresholds": {"review": 30, "deny": 80},
    "velocity": [
        {"name": "hourly", "window_seconds": 3600, "max_count": None, "max_amount": 50_000, "weight": 50},
    ],
    "new_payee": {"enabled": False, "weight": 0},
    "amount_outlier": {"enabled": False, "percentile": 99, "lookback_days": 90, "min_history": 20, "weight": 0},
    "amount_high": {"EUR": {"amount": 10_000, "weight": 40}},
}


@dataclass
class RiskService:
    process: AtriumProcess
    database_url: str
    port: int
    client_id: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def risk_database(harness: ProcessHarness) -> str:
    """A fresh database for the risk service, migrated by its own migrate.ts; dropped at teardown."""
    name = f"atrium_it_risk_{uuid.uuid4().hex[:8]}"
    server = database_server_url()
    database_create(server, name)
    harness.databases.append(name)
    url = database_url_with_name(server, name)
    npm_ci(RISK_DIR)
    subprocess.run(
        [node_path(), "src/migrate.ts"],
        env=node_env({**base_env("portal", url), "RISK_DATABASE_URL": url}),
        cwd=RISK_DIR,
        check=True,
        timeout=120,
    )
    return url


def risk_start(
    harness: ProcessHarness,
    portal: AtriumProcess,
    *,
    database_url: str | None = None,
    port: int | None = None,
    client: tuple[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> RiskService:
    """Run the risk service (a new database, port and identity unless given) and wait for ``/health/ready``."""
    database_url = database_url or risk_database(harness)
    port = port or free_port()
    if client is None:
        own, secret = identity.client_create(
            name=f"risk-service-{uuid.uuid4().hex[:6]}",
            audiences=["portal"],
            scopes=["catalog:register", "audit:ingest"],
        )
        client = (own.id, secret)
    process_env = node_env(
        {
            **base_env("portal", database_url),
            "RISK_DATABASE_URL": database_url,
            "RISK_PORT": str(port),
            "BIND_HOST": "127.0.0.1",
            "RISK_URL": f"http://127.0.0.1:{port}",
            "ATRIUM_PORTAL_URL": portal.url or "",
            "JWT_JWKS_URL": f"{portal.url}/.well-known/jwks.json",
            "ATRIUM_TOKEN_URL": f"{portal.url}/api/v1/auth/token",
            "RISK_CLIENT_ID": client[0],
            "RISK_CLIENT_SECRET": client[1],
            "ATRIUM_LOG_FORMAT": "json",
            **(env or {}),
        }
    )
    process = AtriumProcess(
        name="risk-web",
        cmd=[node_path(), "services/risk/src/main.ts"],
        env=process_env,
        log_path=harness.log_dir / f"risk-web-{port}-{uuid.uuid4().hex[:4]}.log",
        url=f"http://127.0.0.1:{port}",
    )
    harness.processes.append(process)
    process.start().wait_ready()
    return RiskService(process=process, database_url=database_url, port=port, client_id=client[0])


def risk_restart(harness: ProcessHarness, portal: AtriumProcess, risk: RiskService, **kwargs: Any) -> RiskService:
    """The same service again (database, port, identity): after :meth:`AtriumProcess.stop`."""
    return risk_start(
        harness,
        portal,
        database_url=risk.database_url,
        port=risk.port,
        client=(risk.client_id, risk.process.env["RISK_CLIENT_SECRET"]),
        env={k: v for k, v in risk.process.env.items() if k.startswith(("PAYMENTS_", "RISK_RELAY", "RISK_RULES"))},
        **kwargs,
    )


def caller_token(portal: AtriumProcess, scopes: list[str], audience: str = "risk") -> str:
    """A token for ``audience`` (the risk service's by default) from a new machine client allowed ``scopes``."""
    client, secret = identity.client_create(
        name=f"e2e-{audience}-caller-{uuid.uuid4().hex[:6]}", audiences=[audience], scopes=scopes
    )
    response = httpx.post(
        f"{portal.url}/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client.id,
            "client_secret": secret,
            "audience": audience,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def risk_rules(risk: RiskService, token: str, rules: dict[str, Any]) -> dict[str, Any]:
    """PUT the rules; the new version."""
    response = httpx.put(
        f"{risk.url}/api/v1/rules", json={"rules": rules}, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()
