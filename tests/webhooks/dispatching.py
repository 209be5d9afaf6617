"""Helpers of the dispatcher's tests: endpoints and messages written straight to the database (the API and the
ingest have their own tests), a dispatcher running in a thread of its own, and waiting for what it does."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection
from django.utils import timezone

from services.kit.ids import id_new
from services.webhooks.dispatch import DispatchConfig, Dispatcher, database_conninfo
from services.webhooks.models import Attempt, Delivery, Endpoint, Message
from services.webhooks.secrets import encrypt, secret_new

FAST = DispatchConfig(
    timeout=3.0,
    schedule=(0, 0.2, 0.2, 0.2),
    jitter=0.0,
    allow=("127.0.0.0/8",),
    poll=0.1,
    endpoints_refresh=0.1,
    grace=1.0,
)


def endpoint_new(url: str, *, secret: str | None = None, **fields: Any) -> tuple[Endpoint, str]:
    """An enabled endpoint for every event type; returns it and its plain secret."""
    secret = secret or secret_new()
    values: dict[str, Any] = {
        "id": id_new("ep"),
        "url": url,
        "event_types": ["*"],
        "channels": [],
        "secret": encrypt(secret),
        "metadata": {},
    }
    values.update(fields)
    return Endpoint.objects.create(**values), secret


def message_make(endpoints: list[Endpoint], *, data: dict[str, Any] | None = None, **fields: Any) -> Message:
    """A message (``payment.created``) with a pending delivery, due now, to each of ``endpoints``."""
    now = timezone.now()
    msg_id = id_new("msg")
    data = data if data is not None else {"id": id_new("pay"), "amount": 1234}
    body = json.dumps(
        {"type": "payment.created", "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    values: dict[str, Any] = {
        "id": msg_id,
        "event_id": msg_id,
        "type": "payment.created",
        "channels": [],
        "payload": data,
        "body": body,
        "occurred_at": now,
        "source": "tests",
        "request_id": id_new("req"),
        "object_id": str(data.get("id", "")),
    }
    values.update(fields)
    message = Message.objects.create(**values)
    message.refresh_from_db()
    Delivery.objects.bulk_create(
        [
            Delivery(
                message=message,
                endpoint=endpoint,
                msg_seq=message.seq,
                state="pending",
                attempts=0,
                next_attempt_at=now,
            )
            for endpoint in endpoints
        ]
    )
    return message


def attempts_of(endpoint: Endpoint) -> list[Attempt]:
    return list(Attempt.objects.filter(endpoint_id=endpoint.id).order_by("at", "id"))


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {predicate}")
        time.sleep(interval)


class DispatcherThread:
    """A real dispatcher (its own connections, its own event loop) in a background thread."""

    def __init__(self, config: DispatchConfig = FAST) -> None:
        self.dispatcher = Dispatcher(config, conninfo=database_conninfo())
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="dispatcher")
        self._started = threading.Event()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
        finally:
            connection.close()  # the disable path used this thread's Django connection

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started.set()
        await self.dispatcher.run()

    def start(self) -> DispatcherThread:
        self._thread.start()
        self._started.wait(5)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.dispatcher.stop)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the dispatcher did not stop"
        if self.error is not None:
            raise self.error


@contextmanager
def dispatching(config: DispatchConfig = FAST) -> Iterator[Dispatcher]:
    runner = DispatcherThread(config).start()
    try:
        yield runner.dispatcher
    finally:
        runner.stop()


def dispatch_once(config: DispatchConfig = FAST, timeout: float = 30.0) -> Dispatcher:
    """Run a dispatcher until nothing is due or in flight (``--once``)."""
    dispatcher = Dispatcher(config, conninfo=database_conninfo())

    def run() -> None:
        asyncio.run(dispatcher.run(once=True, max_seconds=timeout))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout + 10)
    assert not thread.is_alive()
    return dispatcher
