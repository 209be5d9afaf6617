"""Audit events for people: logins (and failures), logouts, user, group and permission changes.

Recorded by signal receivers in the same transaction as the change (the auth signals fire outside any
transaction and are written at once). Passwords only ever appear as ``[redacted]``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from services.kit.audit import audit_record

USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "is_superuser", "password")


def _user_actor(user: Any) -> dict[str, str]:
    return {"type": "user", "id": str(user.pk), "display": user.get_username()}


def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit_record(
        "auth.login.succeeded", actor=_user_actor(user), object_type="user", object_id=str(user.pk), request=request
    )


def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    username = str(credentials.get("username", ""))[:150]
    audit_record(
        "auth.login.failed",
        outcome="failure",
        actor={"type": "user", "id": "", "display": username},
        object_type="user",
        object_id="",
        metadata={"username": username},
        request=request,
    )


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    audit_record("auth.logout", actor=_user_actor(user), object_type="user", object_id=str(user.pk), request=request)


def _user_before(sender: Any, instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any) -> None:
    if raw or not instance.pk:
        instance._audit_before = None
        return
    before = sender.objects.filter(pk=instance.pk).values(*USER_FIELDS).first()
    instance._audit_before = before


def _user_saved(
    sender: Any, instance: Any, created: bool, raw: bool = False, update_fields: Any = None, **kw: Any
) -> None:
    if raw or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return  # a login stamps last_login: that is auth.login.succeeded, not a change
    after = {f: getattr(instance, f) for f in USER_FIELDS}
    if created:
        changes = {f: [None, v] for f, v in after.items() if v not in (None, "")}
        audit_record("portal.user.created", object_type="user", object_id=str(instance.pk), changes=changes)
        return
    before = getattr(instance, "_audit_before", None) or {}
    changes = {f: [before.get(f), v] for f, v in after.items() if before.get(f) != v}
    if changes:
        audit_record("portal.user.changed", object_type="user", object_id=str(instance.pk), changes=changes)


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    audit_record(
        "portal.user.deleted",
        object_type="user",
        object_id=str(instance.pk),
        metadata={"username": instance.get_username()},
    )


def _group_saved(sender: Any, instance: Group, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if not raw:
        action = "portal.group.created" if created else "portal.group.changed"
        audit_record(action, object_type="group", object_id=str(instance.pk), metadata={"name": instance.name})


def _group_deleted(sender: Any, instance: Group, **kwargs: Any) -> None:
    audit_record(
        "portal.group.deleted", object_type="group", object_id=str(instance.pk), metadata={"name": instance.name}
    )


def _names(model: Any, pks: Any) -> list[str]:
    if not pks:
        return []
    if model is Group:
        return sorted(Group.objects.filter(pk__in=pks).values_list("name", flat=True))
    return sorted(f"{p.content_type.app_label}.{p.codename}" for p in model.objects.filter(pk__in=pks))


def _m2m(action_name: str, object_type: str) -> Any:
    def receiver(
        sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: Any, **kwargs: Any
    ) -> None:
        if reverse or action not in ("post_add", "post_remove", "post_clear"):
            return
        verb = {"post_add": "added", "post_remove": "removed", "post_clear": "cleared"}[action]
        audit_record(
            action_name,
            object_type=object_type,
            object_id=str(instance.pk),
            metadata={verb: _names(model, pk_set) if pk_set else []},
        )

    return receiver


_receivers: list[Any] = []


def connect() -> None:
    user = get_user_model()
    user_logged_in.connect(_logged_in, dispatch_uid="audit-login")
    user_login_failed.connect(_login_failed, dispatch_uid="audit-login-failed")
    user_logged_out.connect(_logged_out, dispatch_uid="audit-logout")
    pre_save.connect(_user_before, sender=user, dispatch_uid="audit-user-before")
    post_save.connect(_user_saved, sender=user, dispatch_uid="audit-user-saved")
    post_delete.connect(_user_deleted, sender=user, dispatch_uid="audit-user-deleted")
    post_save.connect(_group_saved, sender=Group, dispatch_uid="audit-group-saved")
    post_delete.connect(_group_deleted, sender=Group, dispatch_uid="audit-group-deleted")
    for through, name, kind in (
        (user.groups.through, "portal.user.groups_changed", "user"),
        (user.user_permissions.through, "portal.user.permissions_changed", "user"),
        (Group.permissions.through, "portal.group.permissions_changed", "group"),
    ):
        receiver = _m2m(name, kind)
        _receivers.append(receiver)  # signals hold weak references
        m2m_changed.connect(receiver, sender=through, dispatch_uid=f"audit-{name}")
