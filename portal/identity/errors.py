"""Identity errors, with the OAuth 2.0 error name alongside Atrium's stable code."""

from __future__ import annotations

from services.kit.errors import DomainError


class InvalidClient(DomainError):
    code = "invalid_client"
    status = 401
    title = "Client authentication failed"

    def __init__(self, detail: str = "Unknown client, wrong secret, or revoked client.") -> None:
        super().__init__(detail, extra={"error": "invalid_client"})


class UnsupportedGrantType(DomainError):
    code = "unsupported_grant_type"
    status = 400
    title = "Unsupported grant type"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, extra={"error": "unsupported_grant_type"})


class AudienceNotAllowed(DomainError):
    code = "audience_not_allowed"
    status = 403
    title = "Audience not allowed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, extra={"error": "invalid_target"})


class ScopeNotAllowed(DomainError):
    code = "scope_not_allowed"
    status = 403
    title = "Scope not allowed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, extra={"error": "invalid_scope"})


class InvalidClientConfiguration(DomainError):
    code = "invalid_client_configuration"
    status = 400
    title = "Invalid client configuration"
