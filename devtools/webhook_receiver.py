"""The demo webhook receiver ``make up`` runs (``Procfile.dev``): what an integrator's endpoint does, in 200 lines.

It listens on 127.0.0.1 (``WEBHOOK_RECEIVER_PORT``, else ``ATRIUM_PORT_BASE`` + 9: 8009), verifies every delivery's
signature with the official ``standardwebhooks`` package (an implementation independent of Atrium's) and the secret
``make up``'s demo set-up subscribed it with (``$ATRIUM_VAR_DIR/webhook-receiver.json``, re-read when it changes),
and prints one line per delivery::

    verified     payment.settled  webhook-id=msg_2q…  object=pay_8f…  0.21 s after the event

A delivery that fails verification is answered ``401`` and printed ``NOT VERIFIED`` with the reason, so it shows up
as a failed attempt in the webhooks admin; a ``webhook-id`` seen before (a retry, a resend) is marked ``again``:
receivers deduplicate on it (docs/webhooks.md). ``GET /webhooks?object=pay_…`` (or ``/deliveries``) answers the
deliveries it received (the last 1,000) as JSON; ``GET /health`` answers ``ok``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PORT_OFFSET = 9  # from ATRIUM_PORT_BASE: the services take 0-3
PORT_VAR = "WEBHOOK_RECEIVER_PORT"
SECRET_FILE = "webhook-receiver.json"
MAX_BODY = 1024 * 1024
KEEP = 1000  # deliveries answered by GET /deliveries
SEEN = 10_000  # webhook-ids remembered to spot redeliveries


def receiver_port(env: dict[str, str] | os._Environ[str]) -> int:
    """The port ``make up`` runs the receiver on, for this environment."""
    explicit = env.get(PORT_VAR)
    if explicit:
        return int(explicit)
    return int(env.get("ATRIUM_PORT_BASE") or 8000) + PORT_OFFSET


def receiver_url(env: dict[str, str] | os._Environ[str]) -> str:
    return f"http://127.0.0.1:{receiver_port(env)}/webhooks"


def secret_file(var_dir: Path) -> Path:
    return var_dir / SECRET_FILE


def secret_file_write(path: Path, *, url: str, secret: str, endpoint: str) -> None:
    """What the receiver needs, owner-only from the first byte (it holds the endpoint's secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"url": url, "endpoint": endpoint, "secret": secret}, indent=2) + "\n")


@dataclass
class Delivery:
    received_at: str
    verified: bool
    webhook_id: str
    type: str
    object: str
    lag_seconds: float | None
    again: bool
    reason: str = ""


class Receiver:
    """Verifies and records deliveries; the secret comes from ``path`` (re-read when its mtime changes)."""

    def __init__(self, path: Path, out: Any = None) -> None:
        self.path = path
        self.out = out or sys.stdout
        self._mtime: float | None = None
        self._webhook: Any = None
        self.deliveries: deque[Delivery] = deque(maxlen=KEEP)
        self._seen: OrderedDict[str, None] = OrderedDict()

    def webhook(self) -> Any:
        """The ``standardwebhooks.Webhook`` for the current secret, or None while there is none."""
        from standardwebhooks.webhooks import Webhook

        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._mtime, self._webhook = None, None
            return None
        if mtime != self._mtime:
            secret = json.loads(self.path.read_text())["secret"]
            self._webhook, self._mtime = Webhook(secret), mtime
        return self._webhook

    def receive(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Verify one delivery, print its line, record it; the status and body to answer."""
        from standardwebhooks.webhooks import WebhookVerificationError

        headers = {k.lower(): v for k, v in headers.items()}
        webhook_id = headers.get("webhook-id", "")
        again = webhook_id in self._seen
        if webhook_id:
            self._seen[webhook_id] = None
            self._seen.move_to_end(webhook_id)
            while len(self._seen) > SEEN:
                self._seen.popitem(last=False)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        event_type = str(payload.get("type") or "?")
        obj = str(data.get("id") or "-")
        lag = _lag(payload.get("timestamp"))
        reason = ""
        webhook = self.webhook()
        if webhook is None:
            reason = f"no secret yet ({self.path} is missing)"
        else:
            try:
                webhook.verify(body, headers)
            except (WebhookVerificationError, ValueError) as exc:
                reason = str(exc) or type(exc).__name__
        verified = not reason
        delivery = Delivery(
            received_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            verified=verified,
            webhook_id=webhook_id,
            type=event_type,
            object=obj,
            lag_seconds=None if lag is None else round(lag, 3),
            again=again,
            reason=reason,
        )
        self.deliveries.append(delivery)
        print(line(delivery), file=self.out, flush=True)
        if verified:
            return 200, {"received": webhook_id, "verified": True, "type": event_type, "object": obj}
        return 401, {"received": webhook_id, "verified": False, "reason": reason}

    def listed(self, obj: str = "") -> list[dict[str, Any]]:
        return [asdict(d) for d in self.deliveries if not obj or d.object == obj]


def _lag(timestamp: Any) -> float | None:
    """Seconds from the event (the body's ``timestamp``) to now."""
    if not isinstance(timestamp, str):
        return None
    try:
        at = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return (dt.datetime.now(dt.UTC) - at).total_seconds()


def line(delivery: Delivery) -> str:
    """One console line per delivery."""
    verdict = "verified" if delivery.verified else "NOT VERIFIED"
    words = [f"{verdict:<12}", f"{delivery.type:<16}", f"webhook-id={delivery.webhook_id or '-'}"]
    words.append(f"object={delivery.object}")
    if delivery.lag_seconds is not None:
        words.append(f"{delivery.lag_seconds:.2f} s after the event")
    if delivery.again:
        words.append("(again: a redelivery of the same webhook-id)")
    if delivery.reason:
        words.append(f"({delivery.reason})")
    return "  ".join(words)


def app_make(receiver: Receiver) -> Any:
    from aiohttp import web

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        status, answer = receiver.receive(body, dict(request.headers))
        return web.json_response(answer, status=status)

    async def deliveries(request: web.Request) -> web.Response:
        return web.json_response({"deliveries": receiver.listed(request.query.get("object", ""))})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/webhooks", deliver)
    app.router.add_post("/", deliver)
    app.router.add_get("/webhooks", deliveries)
    app.router.add_get("/deliveries", deliveries)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str]) -> int:
    from aiohttp import web

    parser = argparse.ArgumentParser(prog="python -m devtools.webhook_receiver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=receiver_port(os.environ))
    parser.add_argument(
        "--secret-file",
        type=Path,
        default=secret_file(Path(os.environ.get("ATRIUM_VAR_DIR") or "var")),
        help="JSON with the endpoint's secret (make up's demo set-up writes it)",
    )
    args = parser.parse_args(argv)
    receiver = Receiver(args.secret_file)
    started = time.monotonic()
    print(
        f"webhook receiver on http://127.0.0.1:{args.port}/webhooks, verifying with the secret in {args.secret_file}",
        flush=True,
    )
    web.run_app(app_make(receiver), host="127.0.0.1", port=args.port, print=None, access_log=None)
    print(f"webhook receiver stopped after {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
