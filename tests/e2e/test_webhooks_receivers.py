"""The local receivers the webhooks live tests and bench count on (``tests/webhook_receivers.py``): they must
verify what is signed right and refuse what is not, and do what they are told (fail, wait, go down and come
back). Signed here by hand from the Standard Webhooks spec, not with the package the receivers verify with."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time

import httpx
import pytest

from tests.webhook_receivers import Receivers, secret_new


def _signed(secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": f"v1,{base64.b64encode(mac).decode()}",
        "content-type": "application/json",
    }


def _body(object_id: str) -> bytes:
    return json.dumps(
        {"type": "payment.settled", "timestamp": "2026-12-05T03:00:00Z", "data": {"id": object_id}}
    ).encode()


@pytest.fixture(params=[False, True], ids=["thread", "process"])
def receivers(request):
    with Receivers(process=request.param) as hub:
        yield hub


def test_a_receiver_verifies_good_signatures_and_refuses_bad_ones(receivers):
    secret, other = secret_new(), secret_new()
    url = receivers.add("r", secret=secret)
    body = _body("pay_1")
    assert httpx.post(url, content=body, headers=_signed(secret, "msg_1", body)).status_code == 204
    rotated = _signed(secret, "msg_2", body)
    rotated["webhook-signature"] = (
        f"{_signed(other, 'msg_2', body)['webhook-signature']} {rotated['webhook-signature']}"
    )
    assert httpx.post(url, content=body, headers=rotated).status_code == 204  # any one of several signatures
    assert httpx.post(url, content=body, headers=_signed(other, "msg_3", body)).status_code == 400
    assert httpx.post(url, content=body + b" ", headers=_signed(secret, "msg_4", body)).status_code == 400
    old = _signed(secret, "msg_5", body, timestamp=int(time.time()) - 600)
    assert httpx.post(url, content=body, headers=old).status_code == 400  # outside the 5-minute tolerance
    got = receivers.deliveries("r")
    assert [(d.webhook_id, d.verified, d.status) for d in got] == [
        ("msg_1", True, 204),
        ("msg_2", True, 204),
        ("msg_3", False, 400),
        ("msg_4", False, 400),
        ("msg_5", False, 400),
    ]
    assert (got[0].type, got[0].object_id) == ("payment.settled", "pay_1")
    assert got[0].occurred_at == dt.datetime(2026, 12, 5, 3, tzinfo=dt.UTC).timestamp()
    assert [d.webhook_id for d in receivers.successes("r")] == ["msg_1", "msg_2"]


def test_a_receiver_fails_at_random_reproducibly_waits_and_goes_down_and_up(receivers):
    secret = secret_new()
    url = receivers.add("r", secret=secret, fail_rate=0.3, seed=7)
    body = _body("pay_1")
    with httpx.Client() as http:
        first = [http.post(url, content=body, headers=_signed(secret, f"m{i}", body)).status_code for i in range(200)]
        receivers.set("r", seed=7)
        again = [http.post(url, content=body, headers=_signed(secret, f"m{i}", body)).status_code for i in range(200)]
    assert first == again
    assert 40 <= first.count(500) <= 80
    assert set(first) == {204, 500}

    receivers.set("r", fail_rate=0, delay=0.5, status=200)
    began = time.monotonic()
    assert httpx.post(url, content=body, headers=_signed(secret, "slow", body)).status_code == 200
    assert time.monotonic() - began >= 0.5

    receivers.set("r", delay=0)
    with httpx.Client() as kept_alive:
        assert kept_alive.post(url, content=body, headers=_signed(secret, "a", body)).status_code == 200
        receivers.down("r")
        with pytest.raises(httpx.TransportError):  # the open connection is dropped too, and no new one is taken
            kept_alive.post(url, content=body, headers=_signed(secret, "b", body))
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, content=body, headers=_signed(secret, "c", body))
        receivers.up("r")
        assert httpx.post(url, content=body, headers=_signed(secret, "d", body)).status_code == 200
    assert [d.webhook_id for d in receivers.deliveries("r")][-3:] == ["slow", "a", "d"]


def test_a_receiver_that_samples_verifies_one_in_n(receivers):
    secret = secret_new()
    url = receivers.add("r", secret=secret, verify_every=4)
    body = _body("pay_1")
    with httpx.Client() as http:
        for i in range(8):
            http.post(url, content=body, headers=_signed(secret, f"m{i}", body))
    assert [d.verified for d in receivers.deliveries("r")] == [None, None, None, True] * 2
