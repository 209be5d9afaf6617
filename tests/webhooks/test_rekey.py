"""Rotating the key that encrypts endpoint secrets: after ``webhooks_rekey`` the old key can be dropped and every
secret still opens; an endpoint no key opens is named and left alone."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from services.kit.models import OutboxEvent
from services.webhooks import secrets
from services.webhooks.models import Endpoint

pytestmark = pytest.mark.django_db


def test_rekey_moves_every_secret_to_the_new_key(settings: Any, endpoint_make: Callable[..., Endpoint]) -> None:
    settings.ATRIUM_OUTBOX_RELAY = "off"
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WEBHOOKS_SECRET_KEYS = [old]
    plain = {}
    for index in range(3):
        secret, previous, key = secrets.secret_new(), secrets.secret_new(), secrets.signing_key_new()
        endpoint = endpoint_make(
            secret=secret,
            previous_secret=secrets.encrypt(previous) if index else "",
            signing_key=secrets.encrypt(key),
            v1a=True,
        )
        plain[endpoint.id] = (secret, previous if index else "", key)

    settings.WEBHOOKS_SECRET_KEYS = [new, old]
    out = StringIO()
    call_command("webhooks_rekey", "--batch", "2", stdout=out)
    settings.WEBHOOKS_SECRET_KEYS = [new]  # the old key dropped

    assert "3 endpoint(s) re-encrypted" in out.getvalue()
    for endpoint in Endpoint.objects.all():
        opened = tuple(
            secrets.decrypt(getattr(endpoint, name)) for name in ("secret", "previous_secret", "signing_key")
        )
        assert opened == plain[endpoint.id]
    (audit,) = [e.payload for e in OutboxEvent.objects.filter(topic="audit")]
    assert (audit["action"], audit["outcome"], audit["metadata"]["endpoints"]) == (
        "webhooks.endpoint.secrets_rekeyed",
        "success",
        3,
    )


def test_an_endpoint_no_key_opens_is_named_and_left_alone(
    settings: Any, endpoint_make: Callable[..., Endpoint]
) -> None:
    settings.ATRIUM_OUTBOX_RELAY = "off"
    settings.WEBHOOKS_SECRET_KEYS = [Fernet.generate_key().decode()]
    lost = endpoint_make()
    settings.WEBHOOKS_SECRET_KEYS = [Fernet.generate_key().decode()]  # the only key that opened it is gone
    kept = endpoint_make()

    with pytest.raises(CommandError, match=lost.id):
        call_command("webhooks_rekey", stdout=StringIO())

    assert Endpoint.objects.get(id=lost.id).secret == lost.secret
    assert secrets.decrypt(Endpoint.objects.get(id=kept.id).secret).startswith("whsec_")
