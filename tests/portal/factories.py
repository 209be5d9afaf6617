"""Test data for the portal: users holding a role, and machine clients (with their one-time secret).

Plain functions over the real services and models, so what tests create is what the
portal itself would create.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group

from portal.identity import services
from portal.identity.models import MachineClient

PASSWORD = "correct-horse-battery-staple"
_seq = itertools.count(1)


def _next(prefix: str) -> str:
    return f"{prefix}-{next(_seq)}"


def all_audiences() -> list[str]:
    return list(settings.ATRIUM_AUDIENCE_SCOPES)


def all_scopes() -> list[str]:
    return sorted({s for scopes in settings.ATRIUM_AUDIENCE_SCOPES.values() for s in scopes})


def user_with_role(role: str | None, *, username: str | None = None, is_staff: bool = True) -> AbstractBaseUser:
    """A user in the role's group (``None``: no role at all); staff so the admin lets them in."""
    user = get_user_model().objects.create_user(
        username=username or _next(role or "nobody"),
        email=f"{username or role or 'nobody'}@example.test",
        password=PASSWORD,
        is_staff=is_staff,
    )
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


def superuser(*, username: str | None = None) -> AbstractBaseUser:
    name = username or _next("root")
    return get_user_model().objects.create_superuser(username=name, email=f"{name}@example.test", password=PASSWORD)


@dataclass(frozen=True)
class ClientWithSecret:
    """A machine client and the secret it was created with (the only time it is known)."""

    client: MachineClient
    secret: str

    @property
    def id(self) -> str:
        return self.client.id

    def token_request(self, audience: str, **extra: str) -> dict[str, str]:
        """A client-credentials token request body for this client."""
        return {
            "grant_type": "client_credentials",
            "client_id": self.client.id,
            "client_secret": self.secret,
            "audience": audience,
            **extra,
        }


def machine_client(
    *,
    audiences: list[str] | None = None,
    scopes: list[str] | None = None,
    name: str | None = None,
    token_ttl_seconds: int = 900,
    revoked: bool = False,
) -> ClientWithSecret:
    """A machine client created through the service (defaults: audience ``ledger``, ``ledger:read``)."""
    audiences = ["ledger"] if audiences is None else audiences
    scopes = ["ledger:read"] if scopes is None else scopes
    client, secret = services.client_create(
        name=name or _next("client"), audiences=audiences, scopes=scopes, token_ttl_seconds=token_ttl_seconds
    )
    if revoked:
        services.client_revoke(client=client)
    return ClientWithSecret(client=client, secret=secret)
