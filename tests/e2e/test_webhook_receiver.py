"""The demo webhook receiver ``make up`` runs (``devtools/webhook_receiver.py``), as its own process on a free port:
a delivery signed with the endpoint's secret is verified (by ``standardwebhooks``) and logged, a forged or stale one
is answered 401 and logged NOT VERIFIED, a redelivered ``webhook-id`` is marked, a rotated secret is picked up."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.infra import REPO_ROOT, free_port
from devtools.webhook_receiver import secret_file_write
from tests.harness import wait_until


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _signed(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers as the webhooks service sends them (signed here by hand, not with the receiver's library)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{base64.b64encode(mac).decode()}",
        "content-type": "application/json",
    }


def _body(event_type: str, object_id: str) -> bytes:
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": event_type, "timestamp": now, "data": {"id": object_id}}, separators=(",", ":")).encode()


class Running:
    def __init__(self, url: str, log: Path, secret_path: Path) -> None:
        self.url, self.log, self.secret_path = url, log, secret_path

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Running]:
    port = free_port()
    secret_path = tmp_path / "webhook-receiver.json"
    log = tmp_path / "receiver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.webhook_receiver", "--port", str(port), "--secret-file", str(secret_path)],
            cwd=REPO_ROOT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/health", timeout=1).text == "ok"
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 20, "the receiver to answer")
        yield Running(url, log, secret_path)
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_receiver_verifies_logs_and_refuses_as_an_integrator_should(receiver: Running):
    secret = _secret()
    secret_file_write(receiver.secret_path, url=f"{receiver.url}/webhooks", secret=secret, endpoint="ep_demo")

    # a delivery signed with the endpoint's secret is verified, answered 200 and logged on one line
    body = _body("payment.settled", "pay_one")
    answer = httpx.post(f"{receiver.url}/webhooks", content=body, headers=_signed(secret, "msg_one", body))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": "msg_one", "verified": True, "type": "payment.settled", "object": "pay_one"}

    # the same webhook-id again (a retry) is verified and marked as a redelivery
    again = httpx.post(f"{receiver.url}/webhooks", content=body, headers=_signed(secret, "msg_one", body))
    assert again.status_code == 200

    # a forged signature, a tampered body and a stale timestamp are refused (401), logged NOT VERIFIED
    forged = httpx.post(f"{receiver.url}/webhooks", content=body, headers=_signed(_secret(), "msg_two", body))
    tampered = httpx.post(
        f"{receiver.url}/webhooks",
        content=body.replace(b"pay_one", b"pay_xxx"),
        headers=_signed(secret, "msg_three", body),
    )
    stale = httpx.post(
        f"{receiver.url}/webhooks",
        content=body,
        headers=_signed(secret, "msg_four", body, timestamp=int(time.time()) - 600),
    )
    assert [forged.status_code, tampered.status_code, stale.status_code] == [401, 401, 401]
    assert stale.json()["reason"] == "Message timestamp too old"

    lines = receiver.lines()
    verified = [line for line in lines if line.startswith("verified")]
    assert len(verified) == 2, lines
    assert "payment.settled" in verified[0]
    assert "webhook-id=msg_one" in verified[0]
    assert "object=pay_one" in verified[0]
    assert "s after the event" in verified[0]
    assert "again" in verified[1]
    refused = [line for line in lines if line.startswith("NOT VERIFIED")]
    assert [("msg_two" in refused[0]), ("msg_three" in refused[1]), ("msg_four" in refused[2])] == [True] * 3

    # and GET /deliveries answers what it received for an object
    listed = httpx.get(f"{receiver.url}/deliveries", params={"object": "pay_one"}).json()["deliveries"]
    assert [(d["webhook_id"], d["verified"], d["again"]) for d in listed] == [
        ("msg_one", True, False),
        ("msg_one", True, True),
        ("msg_two", False, False),
        ("msg_four", False, False),
    ]
    assert listed[0]["lag_seconds"] < 5

    # a rotated secret (make up's set-up rewrote the file) is picked up without a restart
    rotated = _secret()
    time.sleep(0.01)  # a new mtime
    secret_file_write(receiver.secret_path, url=f"{receiver.url}/webhooks", secret=rotated, endpoint="ep_demo")
    os.utime(receiver.secret_path, (time.time() + 1, time.time() + 1))
    body = _body("payment.created", "pay_two")
    answer = httpx.post(f"{receiver.url}/webhooks", content=body, headers=_signed(rotated, "msg_five", body))
    assert answer.status_code == 200, answer.text


def test_the_receiver_without_a_secret_refuses_and_says_why(receiver: Running):
    body = _body("payment.created", "pay_x")
    answer = httpx.post(f"{receiver.url}/webhooks", content=body, headers=_signed(_secret(), "msg_x", body))
    assert answer.status_code == 401
    assert "no secret yet" in answer.json()["reason"]
