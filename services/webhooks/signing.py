"""Standard Webhooks signatures (https://www.standardwebhooks.com/), pure functions.

Every attempt signs ``f"{msg_id}.{timestamp}."`` + the body bytes:

- ``v1``: HMAC-SHA256 with the secret's decoded bytes, ``"v1," + base64(mac)``;
- ``v1a``: Ed25519, ``"v1a," + base64(signature)``.

``webhook-signature`` carries them space-separated: the current secret's first, the previous secret's while a
rotation overlaps, then the ``v1a`` one when the endpoint has it on.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.webhooks.secrets import secret_bytes, signing_key_load

USER_AGENT = "Atrium-Webhooks/1"


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign_v1(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of the message with a ``whsec_`` secret."""
    mac = hmac.new(secret_bytes(secret), signed_content(msg_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign_v1a(private_key: Ed25519PrivateKey | str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1a,<base64 Ed25519 signature>`` of the message (``private_key``: a key or the hex of its raw bytes)."""
    key = signing_key_load(private_key) if isinstance(private_key, str) else private_key
    return "v1a," + base64.b64encode(key.sign(signed_content(msg_id, timestamp, body))).decode()


def signature_header(
    *,
    secret: str,
    msg_id: str,
    timestamp: int,
    body: bytes,
    previous_secret: str = "",
    previous_secret_expires_at: dt.datetime | None = None,
    signing_key: Ed25519PrivateKey | str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The ``webhook-signature`` value: the current secret's ``v1``, the previous secret's while
    ``previous_secret_expires_at`` is after ``now``, and ``v1a`` when a signing key is given (all plaintext)."""
    signatures = [sign_v1(secret, msg_id, timestamp, body)]
    if previous_secret and previous_secret_expires_at is not None:
        if previous_secret_expires_at > (now or dt.datetime.now(dt.UTC)):
            signatures.append(sign_v1(previous_secret, msg_id, timestamp, body))
    if signing_key:
        signatures.append(sign_v1a(signing_key, msg_id, timestamp, body))
    return " ".join(signatures)


def delivery_headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    """The headers of every attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
