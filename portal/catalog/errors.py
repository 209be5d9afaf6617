"""Catalog errors (RFC 9457 problems with stable codes)."""

from __future__ import annotations

from rest_framework import status

from services.kit.errors import DomainError, NotFound


class ServiceNotFound(NotFound):
    code = "service_not_found"
    title = "No such service in the catalog"


class TeamNotFound(NotFound):
    code = "team_not_found"
    title = "No such team in the catalog"


class InvalidSlug(DomainError):
    code = "invalid_slug"
    status = status.HTTP_400_BAD_REQUEST
    title = "Invalid service slug"


class ServiceRegisteredByAnotherClient(DomainError):
    code = "service_registered_by_another_client"
    status = status.HTTP_403_FORBIDDEN
    title = "Another client registered this service"


# Why a health URL is refused (the problem's code, and its field error's).
HEALTH_URL_INVALID = "health_url_invalid"
HEALTH_URL_BLOCKED = "health_url_blocked"
HEALTH_URL_FOREIGN_HOST = "health_url_foreign_host"


class HealthURLRefused(DomainError):
    """A health URL the catalog will not poll: a field error on ``health_url`` with the same stable code."""

    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    title = "Health URL refused"
    codes = (HEALTH_URL_INVALID, HEALTH_URL_BLOCKED, HEALTH_URL_FOREIGN_HOST)  # the API reference lists each

    def __init__(self, code: str, detail: str) -> None:
        error = {"field": "health_url", "pointer": "#/health_url", "code": code, "detail": detail}
        super().__init__(detail, code=code, extra={"errors": [error]})
