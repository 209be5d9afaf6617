"""``manage.py breakglass_superuser --reason "..."``: a temporary local superuser, for when the portal is down.

Nobody has a password in a service admin (people sign in through the portal, docs/sso.md). When the portal cannot
sign anyone in, this command creates ``breakglass-<time>-<random>`` with a random password, both printed once; it
logs in at ``/admin/login/local/`` and works for ``ATRIUM_SSO_BREAKGLASS_MINUTES`` (60) from its creation, after
which its session ends and the account is deactivated. Its creation (with the reason and who ran it), its login
and its expiry are audited, and so is every change it makes in the admin.
"""

from __future__ import annotations

import getpass
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from services.kit.audit import audit_record
from services.kit.sso import BREAKGLASS_PREFIX


class Command(BaseCommand):
    help = "Create a temporary local superuser (audited) for when sign-in through the portal is unavailable."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", required=True, help="why (recorded in the audit trail)")

    def handle(self, *args: Any, **options: Any) -> None:
        reason = options["reason"].strip()
        if len(reason) < 5:
            raise CommandError("Give a reason of a few words (--reason): it is recorded in the audit trail.")
        username = f"{BREAKGLASS_PREFIX}{timezone.now():%Y%m%d%H%M}-{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(18)
        minutes = settings.ATRIUM_SSO_BREAKGLASS_MINUTES
        try:
            operator = getpass.getuser()
        except (KeyError, OSError):
            operator = "unknown"
        with transaction.atomic():
            get_user_model().objects.create_superuser(username=username, email="", password=password)
            audit_record(
                "auth.breakglass.created",
                actor={"type": "system", "id": f"{settings.ATRIUM_SERVICE}:breakglass", "display": operator},
                object_type="user",
                object_id=username,
                metadata={"reason": reason, "operator": operator, "minutes": minutes},
            )
        self.stdout.write(
            f"Break-glass superuser (valid {minutes} minutes, log in at /admin/login/local/):\n"
            f"  username {username}\n  password {password}\n"
        )
