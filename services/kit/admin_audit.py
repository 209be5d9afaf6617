"""Every change made in any service's Django admin is audited.

``ModelAdmin`` writes a ``LogEntry`` for each addition, change and deletion, in the same transaction as the
change; a receiver turns each into ``<service>.admin.<addition|change|deletion>`` through the outbox.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models.signals import post_save

from services.kit.audit import audit_record

_KINDS = {ADDITION: "addition", CHANGE: "change", DELETION: "deletion"}


def _log_entry_saved(sender: Any, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    if not created or kwargs.get("raw"):
        return
    content_type = instance.content_type
    model = f"{content_type.app_label}.{content_type.model}" if content_type else ""
    user = instance.user
    audit_record(
        f"{settings.ATRIUM_SERVICE}.admin.{_KINDS.get(instance.action_flag, 'change')}",
        object_type=model,
        object_id=instance.object_id or "",
        actor={"type": "user", "id": str(user.pk), "display": user.get_username()},
        metadata={"object": instance.object_repr, "change_message": instance.get_change_message()},
    )


def connect() -> None:
    post_save.connect(_log_entry_saved, sender=LogEntry, dispatch_uid="atrium-admin-audit")
