"""Signatures and secrets, checked against an independent implementation: the official ``standardwebhooks``
package from PyPI verifies what ``services.webhooks.signing`` signs; ``v1a`` is verified with ``cryptography``'s
Ed25519 and the published ``whpk_`` key."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core import checks
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.webhooks import secrets
from services.webhooks.checks import check_secret_keys
from services.webhooks.signing import delivery_headers, sign_v1, sign_v1a, signature_header, signed_content

BODY = json.dumps(
    {"type": "payment.settled", "timestamp": "2026-12-05T09:30:00Z", "data": {"id": "pay_1", "note": "é ✓"}},
    separators=(",", ":"),
    ensure_ascii=False,
).encode()


def _headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return delivery_headers(msg_id, timestamp, signature)


def test_v1_matches_the_standardwebhooks_library() -> None:
    secret = secrets.secret_new()
    now = int(time.time())
    ours = sign_v1(secret, "msg_1", now, BODY)
    theirs = Webhook(secret).sign("msg_1", dt.datetime.fromtimestamp(now, dt.UTC), BODY.decode())
    assert ours == theirs
    assert Webhook(secret).verify(BODY, _headers("msg_1", now, ours)) == json.loads(BODY)


def test_v1_of_another_secret_body_id_or_time_does_not_verify() -> None:
    secret, other = secrets.secret_new(), secrets.secret_new()
    now = int(time.time())
    signature = sign_v1(secret, "msg_1", now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, _headers("msg_1", now, signature))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", _headers("msg_1", now, signature))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, _headers("msg_2", now, signature))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, _headers("msg_1", now + 1, signature))


def test_known_vector() -> None:
    """The Standard Webhooks specification's own example (its reference libraries test the same)."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert sign_v1(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_during_a_rotation_both_secrets_verify_then_only_the_new_one() -> None:
    old, new = secrets.secret_new(), secrets.secret_new()
    now = int(time.time())
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=24)
    header = signature_header(
        secret=new, msg_id="msg_1", timestamp=now, body=BODY, previous_secret=old, previous_secret_expires_at=expires
    )
    assert header.count("v1,") == 2
    assert header.startswith(sign_v1(new, "msg_1", now, BODY) + " ")
    for secret in (old, new):  # a receiver that still has the old secret, and one that already has the new
        Webhook(secret).verify(BODY, _headers("msg_1", now, header))

    after = signature_header(
        secret=new,
        msg_id="msg_1",
        timestamp=now,
        body=BODY,
        previous_secret=old,
        previous_secret_expires_at=expires,
        now=expires + dt.timedelta(seconds=1),
    )
    assert after == sign_v1(new, "msg_1", now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(BODY, _headers("msg_1", now, after))


def test_v1a_verifies_with_the_published_public_key_and_v1_still_does() -> None:
    secret, key = secrets.secret_new(), secrets.signing_key_new()
    now = int(time.time())
    header = signature_header(secret=secret, msg_id="msg_1", timestamp=now, body=BODY, signing_key=key)
    v1, v1a = header.split(" ")
    assert v1a == sign_v1a(key, "msg_1", now, BODY)
    assert v1a.startswith("v1a,")
    published = secrets.public_key(key)
    assert published.startswith("whpk_")
    raw = base64.b64decode(published.removeprefix("whpk_"))
    assert len(raw) == 32
    public = Ed25519PublicKey.from_public_bytes(raw)
    public.verify(base64.b64decode(v1a.split(",", 1)[1]), signed_content("msg_1", now, BODY))
    with pytest.raises(InvalidSignature):
        public.verify(base64.b64decode(v1a.split(",", 1)[1]), signed_content("msg_1", now + 1, BODY))
    # The library skips the v1a signature it does not know and verifies the v1 one.
    Webhook(secret).verify(BODY, _headers("msg_1", now, header))
    assert v1 == sign_v1(secret, "msg_1", now, BODY)


def test_secrets_are_whsec_base64_of_24_to_64_bytes() -> None:
    made = secrets.secret_new()
    assert made.startswith("whsec_")
    assert len(secrets.secret_bytes(made)) == 32
    assert secrets.secret_new() != made
    assert secrets.secret_valid(made)
    for size, valid in ((23, False), (24, True), (64, True), (65, False)):
        assert secrets.secret_valid("whsec_" + base64.b64encode(b"k" * size).decode()) is valid, size
    for bad in ("", "whsec_", "whsec_not base64!", base64.b64encode(b"k" * 32).decode(), None, 42):
        assert not secrets.secret_valid(bad), bad


def test_encryption_round_trip_and_key_rotation(settings: Any) -> None:
    settings.WEBHOOKS_SECRET_KEYS = []
    plaintext = secrets.secret_new()
    derived = secrets.encrypt(plaintext)
    assert derived != plaintext
    assert plaintext not in derived
    assert secrets.decrypt(derived) == plaintext
    assert secrets.encrypt("") == ""
    assert secrets.decrypt("") == ""

    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WEBHOOKS_SECRET_KEYS = [old_key]
    with pytest.raises(InvalidToken):  # the derived dev key is not one of them
        secrets.decrypt(derived)
    under_old = secrets.encrypt(plaintext)
    settings.WEBHOOKS_SECRET_KEYS = [new_key, old_key]  # rotation: the new key first, the old one still decrypts
    assert secrets.decrypt(under_old) == plaintext
    rekeyed = secrets.reencrypt(under_old)
    settings.WEBHOOKS_SECRET_KEYS = [new_key]  # the old key dropped
    assert secrets.decrypt(rekeyed) == plaintext
    with pytest.raises(InvalidToken):
        secrets.decrypt(under_old)


def test_the_derived_key_follows_secret_key(settings: Any) -> None:
    settings.WEBHOOKS_SECRET_KEYS = []
    token = secrets.encrypt("whsec_x")
    settings.SECRET_KEY = "another-secret-key"
    with pytest.raises(InvalidToken):
        secrets.decrypt(token)


def test_system_check_warns_in_dev_and_refuses_production_without_keys(settings: Any) -> None:
    settings.WEBHOOKS_SECRET_KEYS = []
    settings.ATRIUM_ENV = "dev"
    assert [m.id for m in check_secret_keys(None)] == ["webhooks.W001"]
    assert check_secret_keys(None)[0].level == checks.WARNING
    settings.ATRIUM_ENV = "production"
    assert [m.id for m in check_secret_keys(None)] == ["webhooks.E001"]
    settings.WEBHOOKS_SECRET_KEYS = [Fernet.generate_key().decode()]
    assert check_secret_keys(None) == []
