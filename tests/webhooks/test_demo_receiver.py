"""``make up``'s demo subscription (``webhooks_demo_receiver``): one endpoint for the demo receiver, subscribed to
``payment.*``, its secret handed over owner-only; a re-run keeps the endpoint and its secret, follows a moved port
and enables it again; production refuses it."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from standardwebhooks.webhooks import Webhook

from services.webhooks import secrets, services
from services.webhooks.models import Endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _loopback_allowed(settings: Any) -> None:
    settings.ATRIUM_OUTBOX_RELAY = "off"
    settings.WEBHOOKS_ALLOWED_NETWORKS = ["127.0.0.1/32"]  # what make up's environment sets


def test_the_demo_receiver_is_subscribed_once_and_given_its_secret(tmp_path: Path):
    path = tmp_path / "var" / "webhook-receiver.json"

    call_command("webhooks_demo_receiver", "--url=http://127.0.0.1:8009/webhooks", f"--secret={path}")

    (endpoint,) = Endpoint.objects.all()
    assert (endpoint.url, endpoint.event_types, endpoint.enabled) == (
        "http://127.0.0.1:8009/webhooks",
        ["payment.*"],
        True,
    )
    handed = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert handed == {"url": endpoint.url, "endpoint": endpoint.id, "secret": secrets.decrypt(endpoint.secret)}
    Webhook(handed["secret"])  # a secret the receiver's library takes

    # a second make up (moved port, the endpoint disabled meanwhile) keeps the endpoint and its secret
    services.endpoint_disable(endpoint_id=endpoint.id, reason="testing")
    call_command("webhooks_demo_receiver", "--url=http://127.0.0.1:9509/webhooks", f"--secret={path}")
    (again,) = Endpoint.objects.all()
    assert again.id == endpoint.id
    assert (again.url, again.enabled) == ("http://127.0.0.1:9509/webhooks", True)
    assert json.loads(path.read_text())["secret"] == handed["secret"]


def test_production_refuses_the_demo_subscription(settings: Any, tmp_path: Path):
    settings.ATRIUM_ENV = "production"
    with pytest.raises(CommandError, match="production"):
        call_command("webhooks_demo_receiver", "--url=http://127.0.0.1:8009/webhooks", f"--secret={tmp_path / 's'}")
    assert not Endpoint.objects.exists()
