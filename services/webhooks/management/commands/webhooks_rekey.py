"""``manage.py webhooks_rekey``: re-encrypt every endpoint secret under the first key of ``WEBHOOKS_SECRET_KEYS``
(key rotation: the new key first, this, then drop the old key). Exit status 1 when some endpoint's secrets could
be opened by none of the keys (they are left as they were, and named)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from services.webhooks.services import secrets_rekey


class Command(BaseCommand):
    help = "Re-encrypt every endpoint secret under the first of WEBHOOKS_SECRET_KEYS (after adding a new key)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=500, help="endpoints per transaction (default 500)")

    def handle(self, *args: Any, **options: Any) -> None:
        result = secrets_rekey(batch=max(1, options["batch"]))
        self.stdout.write(f"webhooks_rekey: {result.endpoints} endpoint(s) re-encrypted under the first key")
        if result.unreadable:
            raise CommandError(
                f"{len(result.unreadable)} endpoint(s) could not be decrypted with any of WEBHOOKS_SECRET_KEYS "
                f"(left as they were): {', '.join(result.unreadable[:20])}"
            )
