"""Small API views every service exposes."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from services.kit.auth import ClientPrincipal
from services.kit.schema import api_operation


class WhoAmIView(APIView):
    """Who the caller is, as this service sees it (any scope of this service's audience)."""

    # Any valid token minted for this service's audience may ask who it is.
    required_scopes = {"GET": set()}

    @api_operation(
        summary="Who am I",
        description="The machine client this service sees behind the token, and the token's scopes: a quick "
        "check that a token works here. Any token for this service will do.",
        examples=[
            OpenApiExample(
                "A client with read and write scopes",
                value={
                    "service": "payments",
                    "client_id": "cli_01m91tj5evb16g3wrkrk6xt9rh",
                    "scopes": ["payments:read", "payments:write"],
                    "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
                },
                response_only=True,
            )
        ],
        responses=inline_serializer(
            "WhoAmI",
            {
                "service": serializers.CharField(),
                "client_id": serializers.CharField(),
                "scopes": serializers.ListField(child=serializers.CharField()),
                "request_id": serializers.CharField(),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        principal: ClientPrincipal = request.user
        return Response(
            {
                "service": settings.ATRIUM_SERVICE,
                "client_id": principal.client_id,
                "scopes": sorted(principal.scopes),
                "request_id": request._request.request_id,
            }
        )
