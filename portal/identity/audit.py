"""Audit events for people: logins (and failures), logouts, user, group and permission changes.

Recorded by signal receivers, so in the same transaction as the change they describe (the admin wraps each
save in one). The auth signals carry the request, which is passed on, so the events name the source IP, user
agent and request id. Passwords only ever appear as ``[redacted]``: that one changed stays visible, never a
value or a hash. A login stamping ``last_login`` is ``auth.login.succeeded``, not a user change.

Actions: ``auth.login.succeeded``, ``auth.login.failed``, ``auth.logout``; ``portal.user.created|changed|deleted``,
``portal.group.created|changed|deleted``; ``portal.user.groups_changed``, ``portal.user.permissions_changed``,
``portal.group.permissions_changed`` (``changes`` holds the whole set before and after).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest

from services.kit.audit import audit_record, current_request_var

# What a user change records: who they are and what they may do (never last_login, stamped by every login).
USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "is_superuser", "password")
GROUP_FIELDS = ("name",)
MAX_USERNAME = 150
_BEFORE = "_atrium_audit_before"
_M2M_BEFORE = "_atrium_audit_m2m_before"


def _user_actor(user: Any) -> dict[str, str]:
    return {"type": "user", "id": str(user.pk), "display": user.get_username()}


# ------------------------------------------------------------------------------------- logins


def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    audit_record(
        "auth.login.succeeded", actor=_user_actor(user), object_type="user", object_id=str(user.pk), request=request
    )


def attempted_username(credentials: dict[str, Any] | None) -> str:
    """The username a failed login tried: only that key of the credentials, never anything else in them."""
    credentials = credentials or {}
    username_field = get_user_model().USERNAME_FIELD
    value = credentials.get("username", credentials.get(username_field, ""))
    return str(value if isinstance(value, str) else "")[:MAX_USERNAME]


def _login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any) -> None:
    username = attempted_username(credentials)
    audit_record(
        "auth.login.failed",
        outcome="failure",
        actor={"type": "user", "id": "", "display": username},
        object_type="user",
        object_id="",
        metadata={"username": username},
        request=request,
    )


def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None or not getattr(user, "is_authenticated", False):
        return  # logging out without a session changes nothing
    audit_record("auth.logout", actor=_user_actor(user), object_type="user", object_id=str(user.pk), request=request)


# ------------------------------------------------------------------------------- users and groups


def _fields_saved(fields: tuple[str, ...], update_fields: Iterable[str] | None) -> tuple[str, ...]:
    if update_fields is None:
        return fields
    saved = set(update_fields)
    return tuple(f for f in fields if f in saved)


def _remember_before(fields: tuple[str, ...]) -> Callable[..., None]:
    """A pre_save receiver keeping the stored values of ``fields`` on the instance (one query, updates only)."""

    def receiver(
        sender: Any, instance: Any, raw: bool = False, update_fields: Iterable[str] | None = None, **kwargs: Any
    ) -> None:
        instance.__dict__.pop(_BEFORE, None)
        if raw or instance._state.adding or instance.pk is None:
            return
        watched = _fields_saved(fields, update_fields)
        if watched:  # e.g. save(update_fields=["last_login"]) watches nothing: no query
            before = sender._base_manager.using(kwargs.get("using")).filter(pk=instance.pk).values(*watched).first()
            instance.__dict__[_BEFORE] = before

    return receiver


def _diff(instance: Any) -> dict[str, list[Any]]:
    before = instance.__dict__.pop(_BEFORE, None) or {}
    return {f: [old, getattr(instance, f)] for f, old in before.items() if old != getattr(instance, f)}


def _created(instance: Any, fields: tuple[str, ...]) -> dict[str, list[Any]]:
    return {f: [None, getattr(instance, f)] for f in fields if getattr(instance, f) not in (None, "")}


def _user_saved(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    if created:
        changes = _created(instance, _user_fields(sender))
        audit_record("portal.user.created", object_type="user", object_id=str(instance.pk), changes=changes)
        return
    changes = _diff(instance)
    if not changes:
        return  # nothing audited changed (a login's last_login, or a save of the same values)
    if _rehashed(instance, changes, kwargs.get("update_fields")):
        # check_password() re-hashing at login under newer hasher settings: the same password, a new hash.
        # Mid-login nobody is authenticated yet: the user whose password it is did it by logging in.
        request = current_request_var.get()
        mid_login = request is not None and not getattr(getattr(request, "user", None), "is_authenticated", False)
        audit_record(
            "portal.user.changed",
            actor=_user_actor(instance) if mid_login else None,
            object_type="user",
            object_id=str(instance.pk),
            changes=changes,
            metadata={"reason": "password_hash_upgraded"},
        )
        return
    audit_record("portal.user.changed", object_type="user", object_id=str(instance.pk), changes=changes)


def _rehashed(user: Any, changes: dict[str, list[Any]], update_fields: Iterable[str] | None) -> bool:
    """Whether this save is check_password()'s re-hash: only the (usable) hash saved, no new raw password set."""
    if set(changes) != {"password"} or not update_fields or set(update_fields) != {"password"} or _raw_set(user):
        return False
    before, after = changes["password"]
    return is_password_usable(before) and is_password_usable(after)


def _raw_set(user: Any) -> bool:
    # set_password() keeps the raw password until save() has run the validators' password_changed hooks;
    # check_password()'s re-hash clears it before saving.
    return getattr(user, "_password", None) is not None


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    audit_record(
        "portal.user.deleted",
        object_type="user",
        object_id=str(instance.pk),
        changes={f: [getattr(instance, f), None] for f in _user_fields(sender)},
        metadata={"username": instance.get_username()},
    )


def _group_saved(sender: Any, instance: Group, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    if created:
        changes = _created(instance, GROUP_FIELDS)
        action = "portal.group.created"
    else:
        changes = _diff(instance)
        action = "portal.group.changed"
        if not changes:
            return  # the admin saves the group before its permissions; those are their own event
    audit_record(
        action, object_type="group", object_id=str(instance.pk), changes=changes, metadata={"name": instance.name}
    )


def _group_deleted(sender: Any, instance: Group, **kwargs: Any) -> None:
    audit_record(
        "portal.group.deleted",
        object_type="group",
        object_id=str(instance.pk),
        changes={"name": [instance.name, None]},
        metadata={"name": instance.name},
    )


def _user_fields(user_model: Any) -> tuple[str, ...]:
    names = {f.name for f in user_model._meta.concrete_fields}
    return tuple(f for f in USER_FIELDS if f in names)


# ------------------------------------------------------------------------- memberships and grants


@dataclass(frozen=True)
class Relation:
    """A many-to-many whose changes are audited: the owner side's event, and how to name the targets."""

    action: str  # e.g. portal.user.groups_changed
    object_type: str  # the owner: user or group
    field: str  # the owner's field: groups, user_permissions, permissions
    through: type[models.Model]
    owner: str  # the through table's column naming the owner, e.g. user_id
    target: str  # ... and the target, e.g. group_id
    labels: tuple[str, ...]  # lookups from the through row that name a target, joined with "."

    def current(self, owner_ids: Iterable[Any], using: str | None) -> dict[Any, list[str]]:
        """owner id → sorted names of its targets, in one query."""
        rows = (
            self.through._base_manager.using(using)
            .filter(**{f"{self.owner}__in": list(owner_ids)})
            .values_list(self.owner, *self.labels)
        )
        names: dict[Any, list[str]] = defaultdict(list)
        for owner, *label in rows:
            names[owner].append(".".join(str(part) for part in label))
        return {owner: sorted(values) for owner, values in names.items()}

    def owners(self, instance: Any, reverse: bool, pk_set: set[Any] | None, using: str | None) -> list[Any]:
        """Whose membership an m2m operation may change: the instance, or (from the other side) the pks given,
        or for a clear every owner related to the instance."""
        if not reverse:
            return [instance.pk]
        if pk_set is not None:
            return sorted(pk_set)
        rows = self.through._base_manager.using(using).filter(**{self.target: instance.pk})
        return sorted(set(rows.values_list(self.owner, flat=True)))


def _m2m_receiver(relation: Relation) -> Callable[..., None]:
    def receiver(
        sender: Any,
        instance: Any,
        action: str,
        reverse: bool,
        pk_set: set[Any] | None,
        using: str | None = None,
        **kwargs: Any,
    ) -> None:
        phase, _, operation = action.partition("_")
        stash = instance.__dict__.setdefault(_M2M_BEFORE, {})
        key = (relation.action, operation)
        if phase == "pre":
            owners = relation.owners(instance, reverse, pk_set, using)
            stash[key] = (owners, relation.current(owners, using) if owners else {})
            return
        owners, before = stash.pop(key, (None, None))
        if not owners:
            return
        after = relation.current(owners, using)
        for owner in owners:
            old, new = before.get(owner, []), after.get(owner, [])
            if old == new:
                continue
            audit_record(
                relation.action,
                object_type=relation.object_type,
                object_id=str(owner),
                changes={relation.field: [old, new]},
                metadata={"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new))},
            )

    return receiver


def _relation(model: Any, field_name: str, action: str, object_type: str) -> Relation:
    field = model._meta.get_field(field_name)
    through = field.remote_field.through
    owner_name, target_name = field.m2m_field_name(), field.m2m_reverse_field_name()
    target_model = field.related_model
    labels = (
        (f"{target_name}__content_type__app_label", f"{target_name}__codename")
        if target_model._meta.label_lower == "auth.permission"
        else (f"{target_name}__name",)
    )
    return Relation(
        action=action,
        object_type=object_type,
        field=field_name,
        through=through,
        owner=through._meta.get_field(owner_name).attname,
        target=through._meta.get_field(target_name).attname,
        labels=labels,
    )


_receivers: list[Callable[..., None]] = []  # signals hold receivers weakly


def connect() -> None:
    """Connect the receivers (from ``IdentityConfig.ready``)."""
    user = get_user_model()
    user_logged_in.connect(_logged_in, dispatch_uid="audit-login")
    user_login_failed.connect(_login_failed, dispatch_uid="audit-login-failed")
    user_logged_out.connect(_logged_out, dispatch_uid="audit-logout")

    user_before = _remember_before(_user_fields(user))
    group_before = _remember_before(GROUP_FIELDS)
    _receivers.extend([user_before, group_before])
    pre_save.connect(user_before, sender=user, dispatch_uid="audit-user-before")
    post_save.connect(_user_saved, sender=user, dispatch_uid="audit-user-saved")
    post_delete.connect(_user_deleted, sender=user, dispatch_uid="audit-user-deleted")
    pre_save.connect(group_before, sender=Group, dispatch_uid="audit-group-before")
    post_save.connect(_group_saved, sender=Group, dispatch_uid="audit-group-saved")
    post_delete.connect(_group_deleted, sender=Group, dispatch_uid="audit-group-deleted")

    for relation in (
        _relation(user, "groups", "portal.user.groups_changed", "user"),
        _relation(user, "user_permissions", "portal.user.permissions_changed", "user"),
        _relation(Group, "permissions", "portal.group.permissions_changed", "group"),
    ):
        receiver = _m2m_receiver(relation)
        _receivers.append(receiver)
        m2m_changed.connect(receiver, sender=relation.through, dispatch_uid=f"audit-{relation.action}")
