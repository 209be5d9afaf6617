"""``make up``'s demo subscription: the demo receiver (devtools/webhook_receiver.py) subscribed to ``payment.*``.

Idempotent: the endpoint is found again by its metadata (``{"demo": "receiver"}``) and kept, with its secret; its
URL follows the receiver's port and it is enabled again if it was disabled. The secret is written, owner-only, to
the file the receiver reads (``--secret``, ``$ATRIUM_VAR_DIR/webhook-receiver.json``). Refuses to run in
production.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from services.webhooks import secrets, services
from services.webhooks.models import Endpoint

DEMO_METADATA = {"demo": "receiver"}
DESCRIPTION = "Demo receiver (make up): verifies each delivery with standardwebhooks and logs it"
EVENT_TYPES = ["payment.*"]


class Command(BaseCommand):
    help = "Subscribe make up's demo webhook receiver to payment.* and hand it its secret (dev only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", required=True, help="the receiver's URL")
        parser.add_argument("--secret", required=True, type=Path, help="the JSON file the receiver reads")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.ATRIUM_ENV == "production":
            raise CommandError("webhooks_demo_receiver subscribes a demo receiver; it refuses to run in production.")
        url: str = options["url"]
        endpoint = Endpoint.objects.filter(metadata__contains=DEMO_METADATA).order_by("created_at").first()
        if endpoint is None:
            endpoint = services.endpoint_create(
                url=url, event_types=EVENT_TYPES, description=DESCRIPTION, metadata=DEMO_METADATA
            )
        else:
            if endpoint.url != url or endpoint.event_types != EVENT_TYPES:
                endpoint = services.endpoint_update(endpoint_id=endpoint.pk, url=url, event_types=EVENT_TYPES)
            if not endpoint.enabled:
                endpoint = services.endpoint_enable(endpoint_id=endpoint.pk)
        path: Path = options["secret"]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner-only from the first byte
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            payload = {"url": url, "endpoint": endpoint.pk, "secret": secrets.decrypt(endpoint.secret)}
            handle.write(json.dumps(payload, indent=2) + "\n")
        self.stdout.write(f"demo receiver {url} subscribed to {', '.join(EVENT_TYPES)} as {endpoint.pk}")
