"""The whole payments path as separate processes: the live portal (tokens, JWKS, audit trail), the ledger
and payments under gunicorn on their own databases, payments and audit Celery workers, real Redis and
PostgreSQL. Used by the end-to-end and fault tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from devtools.infra import REPO_ROOT
from portal.identity import services as identity
from tests.harness import AtriumProcess, ProcessHarness, current_test_database_url
from workers.celery import app


@dataclass
class PaymentsStack:
    harness: ProcessHarness
    portal: AtriumProcess
    ledger: AtriumProcess
    payments: AtriumProcess
    workers: list[AtriumProcess]
    audit_worker: AtriumProcess
    env: dict[str, str]
    ledger_http: httpx.Client
    payments_http: httpx.Client
    funding: dict[str, str] = field(default_factory=dict)

    # --- the ledger -------------------------------------------------------------------------------------
    def account(self, currency: str = "EUR", **fields: Any) -> str:
        body = {"name": f"e2e-{uuid.uuid4().hex[:6]}", "currency": currency, "normal_balance": "credit", **fields}
        response = self.ledger_http.post("/api/v1/accounts", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def funded(self, amount: int, currency: str = "EUR") -> str:
        if currency not in self.funding:
            self.funding[currency] = self.account(currency, allow_negative=True)
        account = self.account(currency)
        response = self.ledger_http.post(
            "/api/v1/transactions",
            json={
                "reference": f"fund-{uuid.uuid4().hex}",
                "postings": [
                    {"account": self.funding[currency], "direction": "debit", "amount": amount},
                    {"account": account, "direction": "credit", "amount": amount},
                ],
            },
        )
        assert response.status_code == 201, response.text
        return account

    def balance(self, account: str) -> dict[str, Any]:
        response = self.ledger_http.get(f"/api/v1/accounts/{account}/balance")
        assert response.status_code == 200, response.text
        return response.json()

    def ledger_sql(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.ledger.env["LEDGER_DATABASE_URL"], autocommit=True) as conn:
            return conn.execute(sql, params or []).fetchall()

    def payments_sql(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.payments.env["PAYMENTS_DATABASE_URL"], autocommit=True) as conn:
            return conn.execute(sql, params or []).fetchall()

    # --- payments ---------------------------------------------------------------------------------------
    def pay(self, source: str, destination: str, amount: int, **extra: Any) -> dict[str, Any]:
        body = {"amount": amount, "currency": "EUR", "source_account": source, "destination_account": destination}
        response = self.payments_http.post("/api/v1/payments", json=body, **extra)
        assert response.status_code == 201, response.text
        return response.json()

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(every)

    def statuses(self) -> dict[str, int]:
        return dict(self.payments_sql("SELECT status, count(*) FROM payments_payment GROUP BY status"))  # type: ignore[arg-type]

    def send(self, task: str, **kwargs: Any) -> Any:
        return app.send_task(task, kwargs=kwargs).get(timeout=60)

    def reconcile_everything(self, ahead_seconds: int = 120) -> dict[str, Any]:
        """Run the reconciliation in a process of its own with the workers' settings, as if it were
        ``ahead_seconds`` later: the beat task leaves out the last minute (payments still in flight), so
        it would not look at the payments a test has just made at all. Return ``Report.as_dict()``."""
        code = (
            "import datetime as dt, json, django; django.setup()\n"
            "from django.utils import timezone\n"
            "from services.payments.reconcile import reconcile\n"
            f"report = reconcile(now=timezone.now() + dt.timedelta(seconds={int(ahead_seconds)}))\n"
            "print('RECONCILE-REPORT ' + json.dumps(report.as_dict()))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=self.workers[0].env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for line in done.stdout.splitlines():
            if line.startswith("RECONCILE-REPORT "):
                return json.loads(line.removeprefix("RECONCILE-REPORT "))
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise AssertionError(f"reconciliation failed ({done.returncode}):\n{output}")


def payments_stack(
    harness: ProcessHarness,
    portal: AtriumProcess,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    ledger_via: Callable[[str], str] | None = None,
    risk_url: str | None = None,
) -> PaymentsStack:
    """Start the stack for one test (its clients live in the test's portal database, flushed after it).

    ``ledger_via`` maps the ledger's URL to the one the payments processes use instead (a fault-injecting proxy).
    ``risk_url``: payments screens with the risk service there (its identity may then call it).
    """
    own, own_secret = identity.client_create(
        name=f"payments-service-{uuid.uuid4().hex[:6]}",
        audiences=["ledger", "portal", *(["risk"] if risk_url else [])],
        scopes=["catalog:register", "ledger:read", "ledger:write", *(["risk:assess"] if risk_url else [])],
    )
    caller, caller_secret = identity.client_create(
        name=f"e2e-caller-{uuid.uuid4().hex[:6]}",
        audiences=["ledger", "payments"],
        scopes=["ledger:read", "ledger:write", "payments:read", "payments:write"],
    )
    common = {
        "JWT_JWKS_URL": f"{portal.url}/.well-known/jwks.json",
        "ATRIUM_TOKEN_URL": f"{portal.url}/api/v1/auth/token",
        "ATRIUM_OUTBOX_RELAY": "thread",
        "ATRIUM_OUTBOX_POLL_SECONDS": "1",
        **(extra_env or {}),
    }
    ledger = harness.web("ledger", env=common)
    env = {
        **common,
        "LEDGER_URL": ledger_via(ledger.url or "") if ledger_via else ledger.url or "",
        "PAYMENTS_CLIENT_ID": own.id,
        "PAYMENTS_CLIENT_SECRET": own_secret,
        **({"RISK_URL": risk_url} if risk_url else {}),
    }
    payments = harness.web("payments", env=env)
    env["PAYMENTS_DATABASE_URL"] = payments.env["PAYMENTS_DATABASE_URL"]
    started = [harness.worker("payments", database_url=env["PAYMENTS_DATABASE_URL"], env=env) for _ in range(workers)]
    audit = harness.worker("audit", database_url=current_test_database_url(), env=common)

    def token(audience: str) -> str:
        response = httpx.post(
            common["ATRIUM_TOKEN_URL"],
            data={
                "grant_type": "client_credentials",
                "client_id": caller.id,
                "client_secret": caller_secret,
                "audience": audience,
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    return PaymentsStack(
        harness=harness,
        portal=portal,
        ledger=ledger,
        payments=payments,
        workers=started,
        audit_worker=audit,
        env=env,
        ledger_http=httpx.Client(
            base_url=ledger.url or "", timeout=30, headers={"Authorization": f"Bearer {token('ledger')}"}
        ),
        payments_http=httpx.Client(
            base_url=payments.url or "", timeout=30, headers={"Authorization": f"Bearer {token('payments')}"}
        ),
    )
