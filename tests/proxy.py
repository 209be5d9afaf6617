"""A real HTTP proxy on 127.0.0.1 in front of a live Atrium service, which a test lets misbehave for chosen items.

It forwards every request to the upstream and its answer back, except where a rule answers instead. It is how
the poison tests make the ledger refuse a whole batch call, fail with a 500 or answer a malformed body because of
one payment, without changing the ledger: the payments code under test talks to it over HTTP like to the ledger.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.servers import LocalServer, Reply, Seen, json_reply

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})

# A rule sees the request (and the proxy, to read what it learnt) and answers instead of the upstream, or None.
Rule = Callable[["LedgerProxy", Seen, Any], Reply | None]


class LedgerProxy:
    """Forwards to ``upstream``; learns which ledger transaction each reference became (from batch answers), so
    rules can pick a payment's hold out of a settle call by payment id."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.transaction_of: dict[str, str] = {}  # reference (payment id) → ledger transaction id
        self.answered: list[tuple[str, int]] = []  # (path, status) of every rule's answer
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=30)
        self.server = LocalServer(self._respond)
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()
        self._http.close()

    def _respond(self, seen: Seen) -> Reply:
        try:
            document = json.loads(seen.body) if seen.body else None
        except ValueError:
            document = None
        for rule in list(self.rules):
            reply = rule(self, seen, document)
            if reply is not None:
                with self._lock:
                    self.answered.append((seen.path, reply[0]))
                return reply
        headers = {k: v for k, v in seen.headers.items() if k not in HOP_BY_HOP}
        response = self._http.request(seen.method, self.upstream + seen.path, headers=headers, content=seen.body)
        if seen.path == "/api/v1/transactions/batch" and response.status_code == 200 and isinstance(document, dict):
            items = document.get("transactions") or []
            for result in response.json().get("results", []):
                index = result.get("index")
                if result.get("id") and isinstance(index, int) and index < len(items):
                    with self._lock:
                        self.transaction_of[str(items[index].get("reference"))] = result["id"]
        out = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
        return response.status_code, out, response.content

    # ------------------------------------------------------------------------------------------- rules

    def before_forwarding(self, path: str, action: Callable[[Seen], None]) -> None:
        """Run ``action`` while a call to ``path`` is in flight (the caller is waiting), then forward the call: a
        test does something at that exact moment (another worker takes a lease over, or reads it)."""

        def rule(proxy: LedgerProxy, seen: Seen, document: Any) -> Reply | None:
            if seen.path == path:
                action(seen)
            return None

        self.rules.append(rule)

    def delay(self, path: str, seconds: float) -> None:
        """Calls to ``path`` reach the ledger ``seconds`` late (a slow ledger)."""
        self.before_forwarding(path, lambda seen: time.sleep(seconds))

    def _settle_ids(self, document: Any, action: str) -> set[str]:
        if not isinstance(document, dict) or document.get("action") != action:
            return set()
        return {_settle_id(t) for t in document.get("transactions") or []}

    def refuse_batch_with(self, payment_ids: set[str], code: str = "batch_poisoned") -> None:
        """A hold batch naming one of these payments is refused as a whole (422), as an older or stricter ledger
        might refuse a request because of one item."""

        def rule(proxy: LedgerProxy, seen: Seen, document: Any) -> Reply | None:
            if seen.path != "/api/v1/transactions/batch" or not isinstance(document, dict):
                return None
            references = {str(t.get("reference")) for t in document.get("transactions") or [] if isinstance(t, dict)}
            if references & payment_ids:
                return _problem(422, code, "The batch names an item this ledger will not take.")
            return None

        self.rules.append(rule)

    def fail_posting_of(self, payment_ids: set[str]) -> None:
        """A settle call posting one of these payments' holds fails with a 500 (the ledger meets a bug on it)."""

        def rule(proxy: LedgerProxy, seen: Seen, document: Any) -> Reply | None:
            if seen.path != "/api/v1/transactions/batch/settle":
                return None
            poisoned = {proxy.transaction_of.get(p) for p in payment_ids} - {None}
            if self._settle_ids(document, "post") & poisoned:
                return _problem(500, "internal_error", "The server failed to handle this request.")
            return None

        self.rules.append(rule)

    def apply_then_fail_hold_of(self, payment_ids: set[str]) -> None:
        """A hold batch naming one of these payments reaches the ledger, which applies it, but the answer is lost
        in a 500 (the ledger failed after its commit): the payment does not learn that its hold exists."""

        def rule(proxy: LedgerProxy, seen: Seen, document: Any) -> Reply | None:
            if seen.path != "/api/v1/transactions/batch" or not isinstance(document, dict):
                return None
            references = {str(t.get("reference")) for t in document.get("transactions") or [] if isinstance(t, dict)}
            if not references & payment_ids:
                return None
            headers = {k: v for k, v in seen.headers.items() if k not in HOP_BY_HOP}
            proxy._http.request(seen.method, proxy.upstream + seen.path, headers=headers, content=seen.body)
            return _problem(500, "internal_error", "The server failed to handle this request.")

        self.rules.append(rule)

    def garble_posting_of(self, payment_ids: set[str]) -> None:
        """A settle call posting one of these payments' holds is answered 200 with a malformed body (a result
        without a status for every item)."""

        def rule(proxy: LedgerProxy, seen: Seen, document: Any) -> Reply | None:
            if seen.path != "/api/v1/transactions/batch/settle":
                return None
            poisoned = {proxy.transaction_of.get(p) for p in payment_ids} - {None}
            ids = document.get("transactions") if isinstance(document, dict) else None
            if not ids or not self._settle_ids(document, "post") & poisoned:
                return None
            return json_reply(200, {"results": [{"index": i, "id": _settle_id(t)} for i, t in enumerate(ids)]})

        self.rules.append(rule)


def _settle_id(item: Any) -> str:
    """A settle call's item: a transaction id, or ``{"id", "request_id"}`` (the payments worker sends the payment's
    request id with each)."""
    return str(item.get("id")) if isinstance(item, dict) else str(item)


def _problem(status: int, code: str, detail: str) -> Reply:
    body = {"type": f"urn:atrium:problem:{code}", "title": detail, "status": status, "detail": detail, "code": code}
    return status, {"Content-Type": "application/problem+json"}, json.dumps(body).encode()
