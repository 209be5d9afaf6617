"""Who may read the catalog: people by role (viewer and up), machine clients with any one of the read scopes.

The kit's ``required_scopes`` means *all of* them. A catalog read accepts either ``portal:read`` (dashboards,
scripts) or ``catalog:register`` (every service's own client, which finds the services it depends on here),
so a view names the scopes it reads with in ``read_scopes``; writes keep ``required_scopes``.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from portal.identity.permissions import RoleOrScope
from services.kit.auth import ClientPrincipal

READ_SCOPES = frozenset({"portal:read", "catalog:register"})


class CatalogAccess(RoleOrScope):
    """:class:`RoleOrScope`, except that a machine client reads with any one of the view's ``read_scopes``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        read_scopes = getattr(view, "read_scopes", None)
        user = request.user
        if read_scopes and isinstance(user, ClientPrincipal) and request.method in SAFE_METHODS:
            if user.scopes & read_scopes:
                return True
            raise exceptions.PermissionDenied(
                f"Token needs one of the scopes: {', '.join(sorted(read_scopes))}.", code="insufficient_scope"
            )
        return super().has_permission(request, view)
