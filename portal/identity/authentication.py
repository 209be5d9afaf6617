"""The portal's JWT authentication: the kit's, plus the caller's client status on every write.

Verifiers learn revocations within seconds (``services/kit/revocations.py``); the identity provider itself need not
wait: on an unsafe method a machine client's token is checked against its client's row — one primary-key lookup,
no cache that could be stale — and refused if the client was revoked (403 ``client_revoked``) or if the token was
minted with a secret rotated out (401 ``token_revoked``). Refusals are audited (``auth.request.refused``).
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction
from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from portal.identity.models import MachineClient
from portal.identity.revocations import revocation_entry
from services.kit.audit import audit_record
from services.kit.auth import ClientPrincipal, JWTAuthentication


def _refusal_record(request: Request, principal: ClientPrincipal, code: str) -> None:
    with transaction.atomic():  # committed although the request fails
        audit_record(
            "auth.request.refused",
            outcome="failure",
            actor={"type": "client", "id": principal.client_id, "display": principal.client_id},
            object_type="machine_client",
            object_id=principal.client_id,
            metadata={"code": code, "method": request.method, "path": request.path[:200]},
        )


class PortalJWTAuthentication(JWTAuthentication):
    """Bearer tokens for audience ``portal``; writes also need the caller's client to be active now."""

    def authenticate(self, request: Request) -> tuple[ClientPrincipal, dict[str, Any]] | None:
        result = super().authenticate(request)
        if result is None or request.method in SAFE_METHODS:
            return result
        principal, claims = result
        client = (
            MachineClient.objects.filter(pk=principal.client_id)
            .only(
                "is_active", "tokens_not_before", "secret_generation", "previous_secret_valid_until", "revocation_until"
            )
            .first()
        )
        if client is None or not client.is_active:
            _refusal_record(request, principal, "client_revoked")
            # A DRF exception, raised while authenticating: DRF then treats the request as unauthenticated.
            raise exceptions.PermissionDenied(
                "This client has been revoked: its tokens no longer change anything.", code="client_revoked"
            )
        entry = revocation_entry(client)
        if entry is not None and entry.refusal(claims, time.time()) is not None:
            _refusal_record(request, principal, "token_revoked")
            raise exceptions.AuthenticationFailed(
                "Token no longer valid: it was obtained with a secret that was rotated out.", code="token_revoked"
            )
        return result
