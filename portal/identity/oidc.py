"""The portal as an OpenID Connect provider for people (django-oauth-toolkit): the claims it gives a service.

A service's admin signs people in with the authorization code flow and PKCE (docs/sso.md). Besides ``sub`` (the
portal user's id), the ID token and the userinfo answer carry ``preferred_username``, ``name``, ``email`` and
``roles``: the portal roles the person holds (portal/identity/roles.py), which each service maps to its own
permissions. Machine clients keep the client-credentials token endpoint (``/api/v1/auth/token``).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from oauth2_provider.oauth2_validators import OAuth2Validator

from portal.identity.roles import user_roles


class AtriumOIDCValidator(OAuth2Validator):
    # ``roles`` rides with the ``profile`` scope (one scope fewer to configure in every service).
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "roles": "profile"}

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        user = request.user
        return {
            "preferred_username": user.get_username(),
            "name": user.get_full_name() or user.get_username(),
            "email": user.email or "",
            "roles": user_roles(user),
        }

    def validate_silent_login(self, request: Any) -> bool:
        """``prompt=none`` (a service re-checking a sign-in, docs/sso.md): the authorization view answers
        ``login_required`` itself to anyone not logged in, so whoever reaches the grant is."""
        return True

    def validate_silent_authorization(self, request: Any) -> bool:
        """``prompt=none`` needs no consent only for a first-party client (no consent screen: a service admin)."""
        client = getattr(request, "client", None)
        return bool(client is not None and client.skip_authorization)


def sso_tokens_clear() -> int:
    """Delete people's expired sign-in records (codes, access and ID tokens; django-oauth-toolkit's own
    ``clear_expired``): every service re-checks each session every few minutes, each check leaving a code and two
    tokens that live minutes (beat: ``portal.sso_tokens_clear``, hourly). Return how many remain (0: all cleared)."""
    from oauth2_provider.models import clear_expired, get_access_token_model, get_grant_model, get_id_token_model

    clear_expired()
    now = timezone.now()
    return sum(
        model.objects.filter(expires__lt=now).count()
        for model in (get_access_token_model(), get_grant_model(), get_id_token_model())
    )
