"""Every change made in any service's Django admin is audited.

``ModelAdmin`` writes a ``LogEntry`` for each addition, change and deletion, in the same transaction as the
change; a ``post_save`` receiver turns each into ``<service>.admin.<addition|change|deletion>`` through the
outbox, so the event commits (or rolls back) with the change. ``LogEntryManager.log_actions`` bulk-creates the
entries when several objects are logged at once (the admin's "delete selected" action), which sends no
``post_save``: :func:`connect` wraps it so those entries are audited too, in the same transaction as the entries.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.conf import settings
from django.db import router, transaction
from django.utils import translation

from services.kit.audit import actor_of, audit_record, current_request_var

if TYPE_CHECKING:
    from django.contrib.admin.models import LogEntry

DISPATCH_UID = "atrium-admin-audit"
_KINDS = {1: "addition", 2: "change", 3: "deletion"}  # django.contrib.admin.models.ADDITION, CHANGE, DELETION
# Ids of the entries ``post_save`` recorded during the current ``log_actions`` call.
_recorded_var: ContextVar[set[Any] | None] = ContextVar("atrium_admin_audit_recorded", default=None)


def _admin_user(entry: LogEntry) -> Any:
    """The user who made the change: the request's user when it is the same one (no query), else the entry's."""
    request = current_request_var.get()
    user = getattr(request, "user", None) if request is not None else None
    if user is not None and getattr(user, "pk", None) is not None and user.pk == entry.user_id:
        return user
    return entry.user


def admin_entry_record(entry: LogEntry) -> str:
    """Record the audit event for one admin ``LogEntry``; return the event id."""
    from django.contrib.contenttypes.models import ContentType

    content_type = ContentType.objects.get_for_id(entry.content_type_id) if entry.content_type_id else None
    user = _admin_user(entry)
    username = user.get_username()
    with translation.override(None):  # the audit trail reads the same whatever language the admin speaks
        change_message = str(entry.get_change_message())
    return audit_record(
        f"{settings.ATRIUM_SERVICE}.admin.{_KINDS.get(entry.action_flag, 'change')}",
        object_type=f"{content_type.app_label}.{content_type.model}" if content_type else "",
        object_id=entry.object_id or "",
        actor=actor_of(user, current_request_var.get()),
        metadata={
            "change_message": change_message,
            "admin_user": username,
            "object_repr": entry.object_repr,
        },
    )


def _log_entry_saved(sender: Any, instance: LogEntry, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        admin_entry_record(instance)
        recorded = _recorded_var.get()
        if recorded is not None:
            recorded.add(instance.pk)


def _audited_log_actions(log_actions: Any) -> Any:
    @functools.wraps(log_actions)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        recorded: set[Any] = set()
        token = _recorded_var.set(recorded)
        try:
            with transaction.atomic(using=router.db_for_write(self.model)):
                entries = log_actions(self, *args, **kwargs)
                # One entry is saved (post_save recorded it); several are bulk-created, which sends no signal.
                for entry in entries if isinstance(entries, list) else []:
                    if entry.pk not in recorded:
                        admin_entry_record(entry)
        finally:
            _recorded_var.reset(token)
        return entries

    wrapper._atrium_audited = True  # type: ignore[attr-defined]
    return wrapper


def connect() -> None:
    """Audit admin changes of this service (called from ``KitConfig.ready``; a no-op without the admin)."""
    if not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib.admin.models import LogEntry, LogEntryManager
    from django.db.models.signals import post_save

    post_save.connect(_log_entry_saved, sender=LogEntry, dispatch_uid=DISPATCH_UID)
    if not getattr(LogEntryManager.log_actions, "_atrium_audited", False):
        LogEntryManager.log_actions = _audited_log_actions(LogEntryManager.log_actions)
