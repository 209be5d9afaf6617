"""Identity errors, each with the OAuth 2.0 error name alongside Atrium's stable code."""

from __future__ import annotations

from services.kit.errors import DomainError


class OAuthError(DomainError):
    """A token-endpoint error; ``error`` carries the RFC 6749 name for OAuth client libraries."""

    oauth_error = "invalid_request"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, extra={"error": self.oauth_error}, headers=headers)


class InvalidRequest(OAuthError):
    code = oauth_error = "invalid_request"
    status = 400
    title = "Invalid token request"


class InvalidClient(OAuthError):
    code = oauth_error = "invalid_client"
    status = 401
    title = "Client authentication failed"

    def __init__(self, detail: str = "Unknown client, wrong secret, or revoked client.") -> None:
        # RFC 6749 §5.2: a 401 for client authentication names the scheme to use.
        super().__init__(detail, headers={"WWW-Authenticate": 'Basic realm="atrium"'})


class UnsupportedGrantType(OAuthError):
    code = oauth_error = "unsupported_grant_type"
    status = 400
    title = "Unsupported grant type"


class AudienceNotAllowed(OAuthError):
    code = "audience_not_allowed"
    oauth_error = "invalid_target"
    status = 403
    title = "Audience not allowed"


class ScopeNotAllowed(OAuthError):
    code = "scope_not_allowed"
    oauth_error = "invalid_scope"
    status = 403
    title = "Scope not allowed"


class InvalidClientConfiguration(DomainError):
    code = "invalid_client_configuration"
    status = 400
    title = "Invalid client configuration"


class TooManyAttempts(DomainError):
    """Too many failed secrets for one client id: locked out for a while, whatever the secret."""

    code = "too_many_attempts"
    status = 429
    title = "Too many failed attempts"

    def __init__(self, *, retry_after: int) -> None:
        super().__init__(
            f"Too many failed client secrets for this client id; try again in {retry_after} s.",
            extra={"error": "invalid_client", "retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class ClientManagementRefused(DomainError):
    """A machine client may not manage this client (audited as ``portal.client.refused``)."""

    status = 403
    title = "Not allowed to manage this client"


class GrantEscalation(ClientManagementRefused):
    code = "grant_escalation"
    title = "Grants beyond the caller's own"


class ManageScopeMissing(ClientManagementRefused):
    code = "insufficient_scope"
    title = "Managing clients needs the identity:manage scope"


class CallerRevoked(DomainError):
    """The machine client calling has been revoked: its token no longer writes (audited)."""

    code = "client_revoked"
    status = 403
    title = "Client revoked"


class LockoutsUnavailable(DomainError):
    """Token-endpoint lockouts live in Redis, which did not answer."""

    code = "lockouts_unavailable"
    status = 503
    title = "Lockouts unavailable"
