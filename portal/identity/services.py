"""Identity writes: machine clients and token issuance.

Who may manage clients: portal users by their role (``RoleOrScope``: operators and admins), machine clients by the
``identity:manage`` scope and only within their own grants (:func:`client_manage_authorize`). Every change that
cuts tokens off (a revocation, a rotation) is published to the verifiers once it commits
(``portal/identity/revocations.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from portal.identity.errors import (
    AudienceNotAllowed,
    CallerRevoked,
    ClientManagementRefused,
    GrantEscalation,
    InvalidClient,
    InvalidClientConfiguration,
    ManageScopeMissing,
    OAuthError,
    ScopeNotAllowed,
    UnsupportedGrantType,
)
from portal.identity.keys import signing_key
from portal.identity.models import MachineClient
from portal.identity.revocations import revocation_publish_on_commit, revocation_until
from portal.identity.throttle import token_failure_record, token_lockout_check
from services.kit.audit import audit_record
from services.kit.ids import id_new
from services.kit.logs import get_logger

log = get_logger(__name__)

# The scope that lets a machine client create, rotate, revoke and unlock clients (within its own grants).
MANAGE_SCOPE = "identity:manage"


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


def _client_actor(client_id: str) -> dict[str, str]:
    return {"type": "client", "id": client_id, "display": client_id}


def client_refusal_record(
    *, code: str, operation: str, target_id: str = "", actor: dict[str, str] | None = None, **metadata: Any
) -> str:
    """Record ``portal.client.refused`` in a transaction of its own, committed although the request fails.

    ``code`` is the refusal's stable code (``grant_escalation``, ``insufficient_scope``, ``client_revoked``,
    ``role_required``…), ``operation`` what was attempted (``create``, ``rotate_secret``, ``revoke``, ``unlock``).
    Without ``actor``, the current request's caller.
    """
    with transaction.atomic():
        return audit_record(
            "portal.client.refused",
            outcome="failure",
            actor=actor,
            object_type="machine_client",
            object_id=target_id,
            metadata={"code": code, "operation": operation, **metadata},
        )


def client_manage_authorize(
    *, caller_id: str, operation: str, audiences: Iterable[str], scopes: Iterable[str], target_id: str = ""
) -> None:
    """Refuse (403, audited) a machine client managing a client beyond what it holds itself.

    The caller must be active and hold ``identity:manage``, and the client it creates or changes may have only
    audiences and scopes the caller holds: its grants now, in the database (not its token's, which may be older).
    """
    caller = MachineClient.objects.filter(pk=caller_id).only("is_active", "allowed_audiences", "allowed_scopes").first()
    audiences, scopes = sorted(set(audiences)), sorted(set(scopes))
    error: ClientManagementRefused | CallerRevoked | None = None
    extra: dict[str, Any] = {}
    if caller is None or not caller.is_active:
        error = CallerRevoked("This client has been revoked: it can no longer manage clients.")
    elif MANAGE_SCOPE not in caller.allowed_scopes:
        error = ManageScopeMissing(f"Managing clients needs the {MANAGE_SCOPE} scope, which this client does not hold.")
    else:
        audiences_beyond = sorted(set(audiences) - set(caller.allowed_audiences))
        scopes_beyond = sorted(set(scopes) - set(caller.allowed_scopes))
        if audiences_beyond or scopes_beyond:
            held = ", ".join(audiences_beyond + scopes_beyond)
            verb = {"rotate_secret": "rotate the secrets of"}.get(operation, operation)
            error = GrantEscalation(
                f"A client can only {verb} clients within its own grants; it does not hold: {held}."
            )
            extra = {"audiences_beyond": audiences_beyond, "scopes_beyond": scopes_beyond}
    if error is None:
        return
    log.warning("identity.client_management_refused", caller=caller_id, code=error.code, operation=operation)
    client_refusal_record(
        code=error.code,
        operation=operation,
        target_id=target_id,
        actor=_client_actor(caller_id),
        audiences=audiences,
        scopes=scopes,
        **extra,
    )
    raise error


def client_create(
    *,
    name: str,
    audiences: list[str],
    scopes: list[str],
    description: str = "",
    token_ttl_seconds: int = 900,
    created_by: AbstractBaseUser | None = None,
    secret: str | None = None,
    by_client: str | None = None,
) -> tuple[MachineClient, str]:
    """Create a machine client; return it and its secret (the only time the secret is seen).

    ``by_client``: the machine client asking, held to :func:`client_manage_authorize` (users are checked by role).
    """
    client_validate_grants(audiences=audiences, scopes=scopes)
    if by_client is not None:
        client_manage_authorize(caller_id=by_client, operation="create", audiences=audiences, scopes=scopes)
    with transaction.atomic():
        return _client_create(
            name=name,
            audiences=audiences,
            scopes=scopes,
            description=description,
            token_ttl_seconds=token_ttl_seconds,
            created_by=created_by,
            secret=secret or _secret_new(),
            by_client=by_client,
        )


def _client_create(
    *,
    name: str,
    audiences: list[str],
    scopes: list[str],
    description: str,
    token_ttl_seconds: int,
    created_by: AbstractBaseUser | None,
    secret: str,
    by_client: str | None,
) -> tuple[MachineClient, str]:
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
            "created_by_client": by_client or "",
        },
    )
    log.info("identity.client_created", client_id=client.id, client_name=name)
    return client, secret


def client_rotate_secret(
    *,
    client: MachineClient,
    secret: str | None = None,
    grace_seconds: int | None = None,
    by_client: str | None = None,
) -> str:
    """Replace a client's secret; return the new one (shown once). The old secret still obtains tokens for
    ``grace_seconds`` (default ``ATRIUM_CLIENT_SECRET_GRACE_SECONDS``; 0: at once no more), so the processes
    using it can be given the new one without an outage. Tokens it obtained are refused by every verifier once
    that grace is over (at once without one); tokens of the new secret are not.

    ``by_client``: the machine client asking, held to :func:`client_manage_authorize` (taking over a broader
    client's secret would be an escalation)."""
    if by_client is not None:
        client_manage_authorize(
            caller_id=by_client,
            operation="rotate_secret",
            audiences=client.allowed_audiences,
            scopes=client.allowed_scopes,
            target_id=client.id,
        )
    with transaction.atomic():
        return _client_rotate_secret(client=client, secret=secret or _secret_new(), grace_seconds=grace_seconds)


def _client_rotate_secret(*, client: MachineClient, secret: str, grace_seconds: int | None) -> str:
    grace = settings.ATRIUM_CLIENT_SECRET_GRACE_SECONDS if grace_seconds is None else grace_seconds
    # The row locked: two rotations at once must make two generations, not one.
    stored = MachineClient.objects.select_for_update().only("secret_generation", "revocation_until").get(pk=client.pk)
    rotated_before = client.secret_rotated_at
    now = timezone.now()
    client.previous_secret_hash = client.secret_hash if grace > 0 else ""
    client.previous_secret_valid_until = now + dt.timedelta(seconds=grace) if grace > 0 else None
    client.secret_hash = secret_hash(secret)
    client.secret_last4 = secret[-4:]
    client.secret_rotated_at = now
    client.secret_generation = stored.secret_generation + 1
    client.revocation_until = revocation_until(stored, client.previous_secret_valid_until or now)
    client.save(
        update_fields=[
            "secret_hash",
            "secret_last4",
            "secret_rotated_at",
            "previous_secret_hash",
            "previous_secret_valid_until",
            "secret_generation",
            "revocation_until",
            "updated_at",
        ]
    )
    revocation_publish_on_commit(client.id)
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
            "secret_generation": client.secret_generation,
        },
    )
    log.info("identity.client_secret_rotated", client_id=client.id)
    return secret


def client_revoke(*, client: MachineClient, by_client: str | None = None) -> MachineClient:
    """Stop a client from obtaining tokens, and have every verifier refuse the tokens it already holds (within
    seconds: see ``services/kit/revocations.py``).

    ``by_client``: the machine client asking, held to :func:`client_manage_authorize`."""
    if by_client is not None:
        client_manage_authorize(
            caller_id=by_client,
            operation="revoke",
            audiences=client.allowed_audiences,
            scopes=client.allowed_scopes,
            target_id=client.id,
        )
    with transaction.atomic():
        return _client_revoke(client=client)


def _client_revoke(*, client: MachineClient) -> MachineClient:
    before = {"is_active": client.is_active, "revoked_at": client.revoked_at}
    stored = MachineClient.objects.select_for_update().only("revocation_until").get(pk=client.pk)
    now = timezone.now()
    client.is_active = False
    client.revoked_at = now
    client.tokens_not_before = now
    client.revocation_until = revocation_until(stored, now)
    client.save(update_fields=["is_active", "revoked_at", "tokens_not_before", "revocation_until", "updated_at"])
    revocation_publish_on_commit(client.id)
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
    Failed secrets are counted per client id; too many lock it out for a while (429 ``too_many_attempts``,
    ``portal/identity/throttle.py``), the right secret included.
    """
    token_lockout_check(client_id)
    try:
        issued = _token_issue(
            grant_type=grant_type, client_id=client_id, client_secret=client_secret, audience=audience, scope=scope
        )
    except OAuthError as exc:
        token_refusal_record(code=exc.code, client_id=client_id, audience=audience, scope=scope or "")
        if isinstance(exc, InvalidClient):
            token_failure_record(client_id)  # raises TooManyAttempts when this failure starts a lockout
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


def _secret_generation(client: MachineClient, presented: str) -> int | None:
    """Which generation of the client's secret was presented: the current one, or the previous one during its grace
    period after a rotation; None if neither."""
    if hmac.compare_digest(presented, client.secret_hash):
        return client.secret_generation
    grace_until = client.previous_secret_valid_until
    if (
        client.previous_secret_hash
        and grace_until is not None
        and timezone.now() < grace_until
        and hmac.compare_digest(presented, client.previous_secret_hash)
    ):
        return client.secret_generation - 1
    return None


def _token_issue(
    *, grant_type: str, client_id: str, client_secret: str, audience: str, scope: str | None = None
) -> IssuedToken:
    if grant_type != "client_credentials":
        raise UnsupportedGrantType(f"Only grant_type=client_credentials is supported, not {grant_type!r}.")
    client = MachineClient.objects.filter(pk=client_id).first()
    # Hash even for unknown clients so response time does not reveal which ids exist.
    presented = secret_hash(client_secret)
    generation = _secret_generation(client, presented) if client is not None else None
    if client is None or generation is None or not client.is_active:
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
        # Which secret obtained it: once that secret is rotated out (its grace over), verifiers refuse the token.
        "sgen": generation,
    }
    token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
    log.info("identity.token_issued", client_id=client.id, audience=audience, scope=claims["scope"])
    return IssuedToken(
        access_token=token, expires_in=client.token_ttl_seconds, scope=claims["scope"], audience=audience
    )
