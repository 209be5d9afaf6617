"""Portal API permission: users by role (model permissions), machine clients by scope."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import DjangoModelPermissions
from rest_framework.request import Request

from portal.identity.roles import user_roles
from services.kit.auth import ClientPrincipal, HasScope


class RoleOrScope(DjangoModelPermissions):
    """Machine clients need the view's scopes; users need the model permission their role grants.

    Reads need ``view_<model>`` (DRF's default only checks writes).
    """

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.user, ClientPrincipal):
            return HasScope().has_permission(request, view)
        if not request.user or not request.user.is_authenticated:
            return False
        roles = getattr(view, "required_roles", None)
        if roles is not None:
            if not set(roles) & set(user_roles(request.user)):
                raise exceptions.PermissionDenied(
                    f"This needs one of the roles: {', '.join(roles)}.", code="role_required"
                )
            return True
        extra = getattr(view, "required_user_permissions", None)
        if extra is not None:
            if not request.user.has_perms(extra):
                raise exceptions.PermissionDenied("Your role does not allow this.", code="role_required")
            return True
        if not super().has_permission(request, view):
            raise exceptions.PermissionDenied("Your role does not allow this.", code="role_required")
        return True
