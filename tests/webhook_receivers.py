"""Local webhook receivers for the live tests and the webhooks bench.

A ``Receivers`` hub serves any number of receivers, each an aiohttp server on its own free 127.0.0.1 port, from
one asyncio loop: in a thread of the calling process (``Receivers()``) or in a subprocess of its own
(``Receivers(process=True)``: its own interpreter and GIL, what the bench uses so that receiving costs the
bench's client nothing). Either way the caller drives it through a small control server on another port, so
both modes behave the same.

Each receiver verifies every delivery with the ``standardwebhooks`` package (an implementation independent of
Atrium's) against the secret it was given, and records ``(webhook-id, type, data.id, receive time, the body's
timestamp, verified, the status it answered, webhook-timestamp)``. It can be told to:

- answer ``status`` (2xx by default, or any other, with an optional ``Retry-After``);
- answer after ``delay`` seconds;
- fail a fraction ``fail_rate`` of deliveries at random (with ``fail_status``; seeded: ``seed``);
- be down (its port closed, open connections dropped) and come back on the same port;
- verify only one delivery in ``verify_every`` (the bench: the others are parsed, not checked; never 0).

A delivery that fails verification is answered 400 and recorded with ``verified=False``: a test that asserts
``verified`` on every record it counts cannot pass on a bad signature.

Run alone (``python -m tests.webhook_receivers --serve``) it prints its control port on stdout and serves until
stdin closes (what ``process=True`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

REPO_ROOT = Path(__file__).resolve().parent.parent


def secret_new(size: int = 32) -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of ``size`` random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(size)).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    return free_port()


@dataclass(frozen=True)
class Delivery:
    """One request a receiver got."""

    webhook_id: str
    type: str
    object_id: str | None
    received_at: float  # time.time() when the request was read
    occurred_at: float | None  # the body's ``timestamp`` (the event's time), epoch seconds
    verified: bool | None  # None: not checked (``verify_every`` > 1)
    status: int  # what the receiver answered
    webhook_timestamp: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def lag(self) -> float | None:
        """Seconds from the event's time to this request."""
        return None if self.occurred_at is None else self.received_at - self.occurred_at


# ------------------------------------------------------------------------------------------------ the server


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class _Receiver:
    name: str
    port: int
    secret: str | None = None
    status: int = 204
    retry_after: str | None = None
    delay: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 500
    seed: int = 0
    verify_every: int = 1
    records: list[list[Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    rng: random.Random = field(default_factory=random.Random)
    webhook: Webhook | None = None
    counter: int = 0

    def configure(self, options: dict[str, Any]) -> None:
        for key in ("secret", "status", "retry_after", "delay", "fail_rate", "fail_status", "verify_every"):
            if key in options:
                setattr(self, key, options[key])
        if "seed" in options:
            self.seed = int(options["seed"])
            self.rng = random.Random(self.seed)
        self.verify_every = max(1, int(self.verify_every))
        self.webhook = Webhook(self.secret) if self.secret else None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = time.time()
        headers = request.headers
        self.counter += 1
        verified: bool | None = None
        payload: Any = None
        if self.webhook is not None and self.counter % self.verify_every == 0:
            try:
                payload = self.webhook.verify(body, headers)
                verified = True
            except (WebhookVerificationError, ValueError) as exc:  # ValueError: a malformed header or body
                verified = False
                payload = {"error": str(exc)}
        else:
            with contextlib.suppress(ValueError):
                payload = json.loads(body)
        data = payload.get("data") if isinstance(payload, dict) else None
        object_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
        if verified is False:
            status = 400
        elif self.fail_rate and self.rng.random() < self.fail_rate:
            status = self.fail_status
        else:
            status = self.status
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            stamp = int(headers.get("webhook-timestamp", "0"))
        except ValueError:
            stamp = 0
        self.records.append(
            [
                headers.get("webhook-id", ""),
                payload.get("type", "") if isinstance(payload, dict) else "",
                object_id,
                received,
                _epoch(payload.get("timestamp")) if isinstance(payload, dict) else None,
                verified,
                status,
                stamp,
            ]
        )
        extra = {"Retry-After": self.retry_after} if self.retry_after and status in (429, 503) else None
        return web.Response(status=status, headers=extra)

    async def up(self) -> None:
        if self.runner is not None:
            return
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True, backlog=512)
        for attempt in range(50):  # the port was just closed: the kernel may hold it a moment
            try:
                await site.start()
                break
            except OSError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        self.runner = runner

    async def down(self) -> None:
        """Close the port and drop every open connection (keep-alive ones too): clients get refused."""
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()


class _Hub:
    def __init__(self) -> None:
        self.receivers: dict[str, _Receiver] = {}

    async def add(self, request: web.Request) -> web.Response:
        options = await request.json()
        name = options["name"]
        if name in self.receivers:
            return web.json_response({"error": f"receiver {name} exists"}, status=409)
        receiver = _Receiver(name=name, port=int(options.get("port") or free_port()))
        receiver.configure(options)
        self.receivers[name] = receiver
        if not options.get("down"):
            await receiver.up()
        return web.json_response({"name": name, "port": receiver.port})

    async def configure(self, request: web.Request) -> web.Response:
        receiver = self.receivers[request.match_info["name"]]
        options = await request.json()
        receiver.configure(options)
        if options.get("down") is True:
            await receiver.down()
        elif options.get("down") is False:
            await receiver.up()
        return web.json_response({"name": receiver.name, "port": receiver.port, "up": receiver.runner is not None})

    async def records(self, request: web.Request) -> web.Response:
        receiver = self.receivers[request.match_info["name"]]
        since = int(request.query.get("since", "0"))
        rows = receiver.records[since:]
        return web.json_response({"records": rows, "next": since + len(rows)})

    async def reset(self, request: web.Request) -> web.Response:
        receiver = self.receivers[request.match_info["name"]]
        receiver.records = []
        receiver.counter = 0
        return web.json_response({})

    async def close(self) -> None:
        for receiver in self.receivers.values():
            await receiver.down()


async def _serve(ready: Any, stop: asyncio.Event) -> None:
    hub = _Hub()
    app = web.Application()
    app.router.add_post("/receivers", hub.add)
    app.router.add_post("/receivers/{name}", hub.configure)
    app.router.add_get("/receivers/{name}/records", hub.records)
    app.router.add_post("/receivers/{name}/reset", hub.reset)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    ready(port)
    try:
        await stop.wait()
    finally:
        await hub.close()
        await runner.cleanup()


# ------------------------------------------------------------------------------------------------ the client


class Receivers:
    """A hub of local receivers (see the module's docstring); a context manager that stops it."""

    def __init__(self, *, process: bool = False, timeout: float = 30.0) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._next: dict[str, int] = {}
        self._seen: dict[str, list[Delivery]] = {}
        self.ports: dict[str, int] = {}
        if process:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.webhook_receivers", "--serve"],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert self._proc.stdout is not None
            line = self._proc.stdout.readline().decode().strip()
            if not line.isdigit():
                self._proc.kill()
                raise RuntimeError(f"receivers did not start: {line!r}")
            control = int(line)
        else:
            started = threading.Event()
            box: dict[str, int] = {}

            def run() -> None:
                loop = asyncio.new_event_loop()
                self._loop = loop
                self._stop = asyncio.Event()

                def ready(port: int) -> None:
                    box["port"] = port
                    started.set()

                loop.run_until_complete(_serve(ready, self._stop))
                loop.close()

            self._thread = threading.Thread(target=run, name="webhook-receivers", daemon=True)
            self._thread.start()
            if not started.wait(timeout):
                raise RuntimeError("receivers did not start")
            control = box["port"]
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{control}", timeout=timeout)

    def __enter__(self) -> Receivers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, name: str, *, secret: str | None = None, down: bool = False, **behaviour: Any) -> str:
        """A new receiver ``name`` (``secret``: verify with it; ``behaviour``: see ``set``); return its URL."""
        response = self._http.post("/receivers", json={"name": name, "secret": secret, "down": down, **behaviour})
        response.raise_for_status()
        self.ports[name] = response.json()["port"]
        self._next[name] = 0
        self._seen[name] = []
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/hooks/{name}"

    def set(self, name: str, **behaviour: Any) -> None:
        """Change ``name``'s behaviour: ``secret``, ``status``, ``retry_after``, ``delay``, ``fail_rate``,
        ``fail_status``, ``seed``, ``verify_every``, ``down`` (True: close the port; False: open it again)."""
        self._http.post(f"/receivers/{name}", json=behaviour).raise_for_status()

    def down(self, name: str) -> None:
        self.set(name, down=True)

    def up(self, name: str) -> None:
        self.set(name, down=False)

    def deliveries(self, name: str) -> list[Delivery]:
        """Every request ``name`` received so far (each fetched once from the hub, kept here), in arrival order."""
        response = self._http.get(f"/receivers/{name}/records", params={"since": self._next[name]})
        response.raise_for_status()
        body = response.json()
        self._next[name] = body["next"]
        self._seen[name].extend(Delivery(*row) for row in body["records"])
        return list(self._seen[name])

    def successes(self, name: str) -> list[Delivery]:
        """The requests ``name`` answered with a 2xx, in arrival order."""
        return [d for d in self.deliveries(name) if d.ok]

    def count(self, name: str) -> int:
        """How many requests ``name`` answered with a 2xx (fetches only the new ones)."""
        return sum(1 for d in self.deliveries(name) if d.ok)

    def reset(self, name: str) -> None:
        """Forget what ``name`` received."""
        self._http.post(f"/receivers/{name}/reset").raise_for_status()
        self._next[name] = 0
        self._seen[name] = []

    def close(self) -> None:
        self._http.close()
        if self._proc is not None:
            with contextlib.suppress(OSError):
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        if self._thread is not None and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
            self._thread = None


def _serve_until_stdin_closes() -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def ready(port: int) -> None:
            print(port, flush=True)

        def watch() -> None:
            sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or exited
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch, daemon=True).start()
        await _serve(ready, stop)

    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="local webhook receivers (see tests/webhook_receivers.py)")
    parser.add_argument("--serve", action="store_true", help="serve; print the control port; stop at stdin EOF")
    if parser.parse_args().serve:
        _serve_until_stdin_closes()
