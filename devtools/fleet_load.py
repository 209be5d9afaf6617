"""The fleet rehearsal's load generator, in a process of its own: payments created and ledger reads, open loop.

Run by :mod:`devtools.fleet` (``python -m devtools.fleet_load <config.json>``); each line on its standard input
sets the offered rates (``{"payments": 100, "reads": 50}``) or ends the run (``{"stop": true}``: no new requests,
the outstanding ones are awaited). Every request is one JSON line in the output file::

    {"k": "pay"|"bal"|"txn", "t": sent (epoch s), "d": seconds, "s": HTTP status (0: none), "e": failure kind, "id": …}

A failure is a connection error (``connect``), no answer in time (``timeout``), a connection dropped before the
answer (``disconnect``), a 5xx (``5xx``) or any other status than expected (``status``). Payments are
``POST /api/v1/payments`` with an ``Idempotency-Key`` (201 expected); reads alternate an account's balance and
the newest transactions (200 expected).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

TIMEOUT = 10.0


class Load:
    def __init__(self, config: dict[str, Any]) -> None:
        self.payments_url: str = config["payments_url"]
        self.ledger_url: str = config["ledger_url"]
        self.payments_token: str = config["payments_token"]
        self.ledger_token: str = config["ledger_token"]
        self.sources: list[str] = config["sources"]
        self.destinations: list[str] = config["destinations"]
        self.out = Path(config["out"]).open("a", buffering=1 << 16)
        self.rates = {"payments": 0.0, "reads": 0.0}
        self.stopping = False
        self.pending: set[asyncio.Task[None]] = set()
        self.rng = random.Random()  # noqa: S311  (a workload, not a secret)
        self.reads = 0

    def record(self, kind: str, sent: float, began: float, status: int, error: str, **extra: Any) -> None:
        row = {"k": kind, "t": round(sent, 4), "d": round(time.monotonic() - began, 4), "s": status, "e": error}
        row.update(extra)
        self.out.write(json.dumps(row) + "\n")

    async def call(self, session: aiohttp.ClientSession, kind: str, method: str, url: str, **kwargs: Any) -> None:
        sent, began = time.time(), time.monotonic()
        expected = 201 if kind == "pay" else 200
        try:
            async with session.request(method, url, **kwargs) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            self.record(kind, sent, began, 0, "timeout")
            return
        except aiohttp.ClientConnectorError as exc:
            self.record(kind, sent, began, 0, "connect", x=str(exc)[:200])
            return
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            self.record(kind, sent, began, 0, "disconnect", x=str(exc)[:200])
            return
        except aiohttp.ClientError as exc:
            self.record(kind, sent, began, 0, "connect", x=f"{type(exc).__name__}: {exc}"[:200])
            return
        if status == expected:
            extra = {"id": json.loads(body)["id"]} if kind == "pay" else {}
            self.record(kind, sent, began, status, "", **extra)
        else:
            error = "5xx" if status >= 500 else "status"
            self.record(kind, sent, began, status, error, x=body[:200].decode(errors="replace"))

    def payment(self, session: aiohttp.ClientSession) -> Any:
        body = {
            "amount": self.rng.randint(1, 10_000),
            "currency": "EUR",
            "source_account": self.rng.choice(self.sources),
            "destination_account": self.rng.choice(self.destinations),
        }
        headers = {"Authorization": f"Bearer {self.payments_token}", "Idempotency-Key": uuid.uuid4().hex}
        return self.call(session, "pay", "POST", f"{self.payments_url}/api/v1/payments", json=body, headers=headers)

    def read(self, session: aiohttp.ClientSession) -> Any:
        self.reads += 1
        headers = {"Authorization": f"Bearer {self.ledger_token}"}
        if self.reads % 2:
            account = self.rng.choice(self.sources + self.destinations)
            return self.call(
                session, "bal", "GET", f"{self.ledger_url}/api/v1/accounts/{account}/balance", headers=headers
            )
        return self.call(session, "txn", "GET", f"{self.ledger_url}/api/v1/transactions?limit=10", headers=headers)

    async def stream(self, session: aiohttp.ClientSession, which: str) -> None:
        """Requests of one kind at ``self.rates[which]`` per second, evenly spaced, never waiting for answers."""
        rate = 0.0
        due = time.monotonic()
        while not self.stopping:
            if self.rates[which] != rate:
                rate, due = self.rates[which], time.monotonic()
            if rate <= 0:
                await asyncio.sleep(0.05)
                continue
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stopping or self.rates[which] != rate:
                continue
            task = asyncio.create_task(self.payment(session) if which == "payments" else self.read(session))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            due += 1.0 / rate

    async def run(self) -> None:
        loop = asyncio.get_running_loop()

        def control() -> None:  # stdin, in a thread: the rates and the stop
            for line in sys.stdin:
                with contextlib.suppress(ValueError):
                    command = json.loads(line)
                    loop.call_soon_threadsafe(self.apply, command)
            loop.call_soon_threadsafe(self.apply, {"stop": True})

        threading.Thread(target=control, daemon=True).start()
        connector = aiohttp.TCPConnector(limit=400, keepalive_timeout=5)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(self.stream(session, "payments"), self.stream(session, "reads"))
            if self.pending:
                await asyncio.wait(list(self.pending), timeout=TIMEOUT + 5)
        self.out.close()

    def apply(self, command: dict[str, Any]) -> None:
        if command.get("stop"):
            self.stopping = True
            return
        for which in ("payments", "reads"):
            if which in command:
                self.rates[which] = float(command[which])


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    asyncio.run(Load(config).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
