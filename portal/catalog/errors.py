"""Catalog errors (RFC 9457 problems with stable codes)."""

from __future__ import annotations

from rest_framework import status

from services.kit.errors import DomainError, NotFound


class ServiceNotFound(NotFound):
    code = "service_not_found"
    title = "No such service in the catalog"


class ServiceRegisteredByAnotherClient(DomainError):
    code = "service_registered_by_another_client"
    status = status.HTTP_403_FORBIDDEN
    title = "Another client registered this service"
