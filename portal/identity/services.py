"""Identity writes: machine clients and token issuance."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from portal.identity.errors import (
    AudienceNotAllowed,
    InvalidClient,
    InvalidClientConfiguration,
    OAuthError,
    ScopeNotAllowed,
    UnsupportedGrantType,
)
from portal.identity.keys import signing_key
from portal.identity.models import MachineClient
from services.kit.audit import audit_record
from services.kit.ids import id_new
from services.kit.logs import get_logger

log = get_logger(__name__)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _secret_new() -> str:
    return f"cs_{secrets.token_urlsafe(32)}"


def client_validate_grants(*, audiences: list[str], scopes: list[str]) -> None:
    """Refuse audiences or scopes the platform does not know, or scopes of audiences not granted."""
    known: dict[str, list[str]] = settings.ATRIUM_AUDIENCE_SCOPES
    if not audiences:
        raise InvalidClientConfiguration("A client needs at least one audience.")
    unknown = sorted(set(audiences) - set(known))
    if unknown:
        raise InvalidClientConfiguration(f"Unknown audience(s): {', '.join(unknown)}.")
    grantable = {scope for audience in audiences for scope in known[audience]}
    stray = sorted(set(scopes) - grantable)
    if stray:
        raise InvalidClientConfiguration(f"Scope(s) not offered by the allowed audiences: {', '.join(stray)}.")


@transaction.atomic
def client_create(
    *,
    name: str,
    audiences: list[str],
    scopes: list[str],
    description: str = "",
    token_ttl_seconds: int = 900,
    created_by: AbstractBaseUser | None = None,
    secret: str | None = None,
) -> tuple[MachineClient, str]:
    """Create a machine client; return it and its secret (the only time the secret is seen)."""
    client_validate_grants(audiences=audiences, scopes=scopes)
    secret = secret or _secret_new()
    client = MachineClient(
        name=name,
        description=description,
        allowed_audiences=sorted(set(audiences)),
        allowed_scopes=sorted(set(scopes)),
        token_ttl_seconds=token_ttl_seconds,
        created_by=created_by,
        secret_hash=secret_hash(secret),
        secret_last4=secret[-4:],
    )
    client.full_clean()
    client.save()
    # Never the secret or its hash: who the client is and what it may do.
    audit_record(
        "portal.client.created",
        object_type="machine_client",
        object_id=client.id,
        changes={
            "name": [None, client.name],
            "description": [None, client.description],
            "allowed_audiences": [None, client.allowed_audiences],
            "allowed_scopes": [None, client.allowed_scopes],
            "token_ttl_seconds": [None, client.token_ttl_seconds],
            "is_active": [None, client.is_active],
        },
        metadata={
            "name": name,
            "audiences": client.allowed_audiences,
            "scopes": client.allowed_scopes,
            "token_ttl_seconds": token_ttl_seconds,
            "created_by": created_by.get_username() if created_by is not None else "",
        },
    )
    log.info("identity.client_created", client_id=client.id, client_name=name)
    return client, secret


@transaction.atomic
def client_rotate_secret(*, client: MachineClient, secret: str | None = None, grace_seconds: int | None = None) -> str:
    """Replace a client's secret; return the new one (shown once). The old secret still obtains tokens for
    ``grace_seconds`` (default ``ATRIUM_CLIENT_SECRET_GRACE_SECONDS``; 0: at once no more), so the processes
    using it can be given the new one without an outage."""
    secret = secret or _secret_new()
    grace = settings.ATRIUM_CLIENT_SECRET_GRACE_SECONDS if grace_seconds is None else grace_seconds
    rotated_before = client.secret_rotated_at
    now = timezone.now()
    client.previous_secret_hash = client.secret_hash if grace > 0 else ""
    client.previous_secret_valid_until = now + dt.timedelta(seconds=grace) if grace > 0 else None
    client.secret_hash = secret_hash(secret)
    client.secret_last4 = secret[-4:]
    client.secret_rotated_at = now
    client.save(
        update_fields=[
            "secret_hash",
            "secret_last4",
            "secret_rotated_at",
            "previous_secret_hash",
            "previous_secret_valid_until",
            "updated_at",
        ]
    )
    # Never the secret or its hash: only that it changed, and when.
    audit_record(
        "portal.client.secret_rotated",
        object_type="machine_client",
        object_id=client.id,
        changes={"secret_rotated_at": [rotated_before, client.secret_rotated_at]},
        metadata={
            "rotated_at": client.secret_rotated_at,
            "name": client.name,
            "previous_secret_valid_until": client.previous_secret_valid_until,
        },
    )
    log.info("identity.client_secret_rotated", client_id=client.id)
    return secret


@transaction.atomic
def client_revoke(*, client: MachineClient) -> MachineClient:
    """Stop a client from obtaining new tokens (tokens already issued expire on their own)."""
    before = {"is_active": client.is_active, "revoked_at": client.revoked_at}
    client.is_active = False
    client.revoked_at = timezone.now()
    client.save(update_fields=["is_active", "revoked_at", "updated_at"])
    audit_record(
        "portal.client.revoked",
        object_type="machine_client",
        object_id=client.id,
        changes={"is_active": [before["is_active"], False], "revoked_at": [before["revoked_at"], client.revoked_at]},
        metadata={"name": client.name},
    )
    log.info("identity.client_revoked", client_id=client.id)
    return client


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    audience: str

    def as_response(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


MAX_CLIENT_ID = 64


def _token_actor(client_id: str | None) -> dict[str, str]:
    client_id = str(client_id or "")[:MAX_CLIENT_ID]
    return {"type": "client", "id": client_id, "display": client_id or "unknown"}


def token_refusal_record(*, code: str, client_id: str | None = None, audience: str = "", scope: str = "") -> str:
    """Record ``auth.token.failed`` in a transaction of its own, committed although the request fails.

    ``code`` is the refusal's stable code (invalid_client, scope_not_allowed, audience_not_allowed,
    unsupported_grant_type, invalid_request); never pass the secret.
    """
    metadata: dict[str, Any] = {"code": code}
    if client_id:
        metadata["client_id"] = str(client_id)[:MAX_CLIENT_ID]
    if audience:
        metadata["audience"] = str(audience)[:MAX_CLIENT_ID]
    if scope:
        metadata["scope"] = str(scope)[:1000]
    with transaction.atomic():
        return audit_record(
            "auth.token.failed",
            outcome="failure",
            actor=_token_actor(client_id),
            object_type="machine_client",
            object_id=str(client_id or "")[:MAX_CLIENT_ID],
            metadata=metadata,
        )


def token_issue(
    *, grant_type: str, client_id: str, client_secret: str, audience: str, scope: str | None = None
) -> IssuedToken:
    """OAuth 2.0 client-credentials grant: verify the client, narrow the scopes, sign a JWT.

    Issued tokens and refusals are audited (``auth.token.issued`` / ``auth.token.failed``); never the secret.
    A refusal's event is committed in a transaction of its own (the caller's error rolls nothing of it back).
    """
    try:
        issued = _token_issue(
            grant_type=grant_type, client_id=client_id, client_secret=client_secret, audience=audience, scope=scope
        )
    except OAuthError as exc:
        token_refusal_record(code=exc.code, client_id=client_id, audience=audience, scope=scope or "")
        raise
    # One short transaction: the client's last use and the audit event together.
    with transaction.atomic():
        MachineClient.objects.filter(pk=client_id).update(last_used_at=timezone.now())
        audit_record(
            "auth.token.issued",
            actor=_token_actor(client_id),
            object_type="machine_client",
            object_id=client_id,
            metadata={"audience": audience, "scope": issued.scope},
        )
    return issued


def _secret_matches(client: MachineClient, presented: str) -> bool:
    """The current secret, or the previous one during its grace period after a rotation."""
    if hmac.compare_digest(presented, client.secret_hash):
        return True
    grace_until = client.previous_secret_valid_until
    return bool(
        client.previous_secret_hash
        and grace_until is not None
        and timezone.now() < grace_until
        and hmac.compare_digest(presented, client.previous_secret_hash)
    )


def _token_issue(
    *, grant_type: str, client_id: str, client_secret: str, audience: str, scope: str | None = None
) -> IssuedToken:
    if grant_type != "client_credentials":
        raise UnsupportedGrantType(f"Only grant_type=client_credentials is supported, not {grant_type!r}.")
    client = MachineClient.objects.filter(pk=client_id).first()
    # Hash even for unknown clients so response time does not reveal which ids exist.
    presented = secret_hash(client_secret)
    if client is None or not _secret_matches(client, presented) or not client.is_active:
        log.warning("identity.token_refused", client_id=client_id, reason="invalid_client", audience=audience)
        raise InvalidClient()
    if audience not in client.allowed_audiences:
        log.warning("identity.token_refused", client_id=client_id, reason="audience_not_allowed", audience=audience)
        raise AudienceNotAllowed(f"Client {client.id} may not request tokens for audience {audience!r}.")
    offered = [s for s in client.allowed_scopes if s in settings.ATRIUM_AUDIENCE_SCOPES.get(audience, [])]
    if scope:
        requested = scope.split()
        refused = sorted(set(requested) - set(offered))
        if refused:
            log.warning("identity.token_refused", client_id=client_id, reason="scope_not_allowed", scopes=refused)
            raise ScopeNotAllowed(f"Scope(s) not allowed for this client and audience: {' '.join(refused)}.")
        granted = sorted(set(requested))
    else:
        granted = sorted(offered)
    key = signing_key()
    now = int(time.time())
    claims = {
        "iss": settings.JWT_ISSUER,
        "sub": client.id,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + client.token_ttl_seconds,
        "jti": id_new("tok"),
        "scope": " ".join(granted),
        "client_id": client.id,
        "client_name": client.name,
    }
    token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
    log.info("identity.token_issued", client_id=client.id, audience=audience, scope=claims["scope"])
    return IssuedToken(
        access_token=token, expires_in=client.token_ttl_seconds, scope=claims["scope"], audience=audience
    )
