"""A stand-in for the risk service (services/risk) speaking its HTTP contract, served by a real threaded HTTP server
in the test process: ``POST /api/v1/assessments`` with one payment or ``{"payments": [...]}`` → the assessments in
the request's order, idempotent on ``payment_id``; bearer tokens for audience ``risk`` only.

Decisions by amount (minor units): ≥ ``DENY_FROM`` deny (score 90), ≥ ``REVIEW_FROM`` review (score 60), else
allow (score 5). A test can make it misbehave: ``mode`` = ``"ok"`` | ``"500"`` | ``"garbage"`` | ``"hang"``;
``poison`` (payment ids whose presence in a batch makes it answer 500), ``refuse`` (ids whose presence makes it
answer 400 validation_error); :meth:`stop` and :meth:`start` (again on the same port).

The real Node service is tested end to end elsewhere (its own suite, and the live tests).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from typing import Any

from tests.servers import LocalServer, Reply, Seen, json_reply

PATH = "/api/v1/assessments"
REVIEW_FROM = 50_000
DENY_FROM = 90_000
FIELDS = {"payment_id", "amount", "currency", "source_account", "destination_account", "client_id", "created_at"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _audience(authorization: str) -> str:
    try:
        payload = authorization.removeprefix("Bearer ").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return ""
    return str(claims.get("aud", ""))


def _problem(status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> Reply:
    body = {"type": "about:blank", "title": code, "status": status, "detail": detail, "code": code}
    if errors:
        body["errors"] = errors
    reply = json_reply(status, body)
    assert reply is not None
    return reply[0], {"Content-Type": "application/problem+json"}, reply[2]


class RiskStandIn:
    def __init__(self) -> None:
        self.mode = "ok"
        self.hang_seconds = 2.0
        self.poison: set[str] = set()
        self.refuse: set[str] = set()
        self.stored: dict[str, dict[str, Any]] = {}
        self.batches: list[list[str]] = []  # the payment ids of each assessments call, in order
        self.bodies: list[Any] = []
        self.lock = threading.Lock()
        self.on_call: Any = None  # called with the payment ids of each call before it is answered (tests)
        self.server: LocalServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = LocalServer(self._respond, port=self.port)
        self.port = self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def calls(self) -> int:
        with self.lock:
            return len(self.batches)

    def _decide(self, item: dict[str, Any]) -> dict[str, Any]:
        amount = item["amount"]
        if amount >= DENY_FROM:
            score, decision = 90, "deny"
            reasons = [
                {"code": "amount_high", "message": f"{amount} {item['currency']} is above 90000", "weight": 60},
                {"code": "new_payee", "message": "first payment to this destination", "weight": 30},
            ]
        elif amount >= REVIEW_FROM:
            score, decision = 60, "review"
            reasons = [{"code": "amount_outlier", "message": "above the source's p99", "weight": 60}]
        else:
            score, decision, reasons = 5, "allow", []
        return {
            "id": f"rsk_{len(self.stored):026d}",
            "payment_id": item["payment_id"],
            "score": score,
            "decision": decision,
            "reasons": reasons,
            "rules_version": 1,
            "assessed_at": "2026-12-05T10:00:00.000000Z",
        }

    def _respond(self, seen: Seen) -> Reply:
        if seen.path != PATH or seen.method != "POST":
            return _problem(404, "not_found", "no such route")
        if _audience(seen.headers.get("authorization", "")) != "risk":
            return _problem(401, "not_authenticated", "a bearer token for audience risk is required")
        try:
            body = json.loads(seen.body)
        except ValueError:
            return _problem(400, "malformed_json", "not JSON")
        items = body.get("payments") if isinstance(body, dict) and "payments" in body else [body]
        ids = [i.get("payment_id") for i in items if isinstance(i, dict)]
        with self.lock:
            self.batches.append(ids)
            self.bodies.append(body)
        if self.on_call is not None:
            self.on_call(ids)
        if self.mode == "hang":
            time.sleep(self.hang_seconds)
            return None
        if self.mode == "500" or self.poison & set(ids):
            return _problem(500, "internal_error", "something broke")
        if self.mode == "garbage":
            return 200, {"Content-Type": "application/json"}, b'{"assessments": "yes'
        for index, item in enumerate(items):
            unknown = sorted(set(item) - FIELDS) if isinstance(item, dict) else ["(not an object)"]
            missing = sorted(FIELDS - set(item)) if isinstance(item, dict) else []
            bad = (
                unknown
                or missing
                or item["payment_id"] in self.refuse
                or not RFC3339.match(str(item["created_at"]))
                or not re.fullmatch(r"[A-Z]{3}", str(item["currency"]))
            )
            if bad:
                return _problem(
                    400,
                    "validation_error",
                    "The request body is invalid.",
                    [{"field": "amount", "pointer": f"/payments/{index}/amount", "code": "invalid", "detail": "no"}],
                )
        answers = []
        with self.lock:
            for item in items:
                stored = self.stored.get(item["payment_id"])
                if stored is None:
                    stored = self.stored[item["payment_id"]] = self._decide(item)
                answers.append(stored)
        return json_reply(200, {"assessments": answers} if "payments" in body else answers[0])
