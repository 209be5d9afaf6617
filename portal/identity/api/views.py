"""Identity API: OAuth token endpoint, JWKS, revocations, machine clients, and who-am-i."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control
from drf_spectacular.utils import OpenApiExample, extend_schema_view, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.parsers import FormParser
from rest_framework.permissions import SAFE_METHODS, AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.identity import errors, services, throttle
from portal.identity.api.serializers import (
    MachineClientCreateSerializer,
    MachineClientSerializer,
    MachineClientWithSecretSerializer,
    RotateSecretSerializer,
    TokenRequestSerializer,
    TokenResponseSerializer,
)
from portal.identity.errors import InvalidClient, InvalidRequest, OAuthError
from portal.identity.keys import jwks
from portal.identity.models import MachineClient
from portal.identity.revocations import revocations_current
from portal.identity.roles import user_roles
from services.kit.auth import ClientPrincipal
from services.kit.cors import cors_allow, cors_preflight
from services.kit.errors import problem_response
from services.kit.ids import id_is_valid
from services.kit.parsers import StrictJSONParser
from services.kit.revocations import revocations_document
from services.kit.schema import api_operation


def _reads_only(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """GET and HEAD only; anything else a 405 problem document (Django's ``require_GET`` answers an empty HTML page)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            response = problem_response(
                request,
                status_code=405,
                code="method_not_allowed",
                title="Method not allowed",
                detail=f"Method {request.method} is not allowed here; use GET.",
            )
            response["Allow"] = "GET, HEAD"
            return response
        return view(request)

    return wrapped


@_reads_only
@cache_control(public=True, max_age=300)
def jwks_view(request: HttpRequest) -> HttpResponse:
    """``/.well-known/jwks.json``: the public keys services verify tokens with."""
    return HttpResponse(json.dumps(jwks()), content_type="application/jwk-set+json")


@_reads_only
def revocations_view(request: HttpRequest) -> HttpResponse:
    """``/.well-known/atrium-revocations.json``: what every token verifier must refuse (see services/kit/revocations).

    Public, like a certificate revocation list: a service whose own client was revoked must still be able to read
    it, and it holds client ids and times, nothing secret. Verifiers read it when Redis cannot tell them.
    """
    body = json.dumps(revocations_document(revocations_current()), separators=(",", ":"))
    response = HttpResponse(body, content_type="application/json")
    response["Cache-Control"] = "no-store"  # a revocation must not wait in a cache
    return response


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidClient("Malformed Basic credentials.") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("Malformed Basic credentials.")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


class TokenView(APIView):
    """OAuth 2.0 client-credentials grant (RFC 6749 §4.4), JSON or form body, secret in body or Basic."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [StrictJSONParser, FormParser]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., HttpResponse]:
        # A refusal's audit event commits in a transaction of its own: never inside a request-wide one
        # (ATOMIC_REQUESTS) that the refused request would roll back.
        return transaction.non_atomic_requests(super().as_view(**initkwargs))

    def options(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """A browser's preflight (Swagger UI's "Authorize" on a service's API docs, another origin)."""
        return cors_preflight(request, origins=settings.ATRIUM_TOKEN_CORS_ORIGINS, methods=["POST"])

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        return cors_allow(request, response, origins=settings.ATRIUM_TOKEN_CORS_ORIGINS)

    @api_operation(
        summary="Get an access token",
        description="OAuth 2.0 client credentials (RFC 6749 §4.4): a machine client trades its id and secret "
        "for a bearer token for one service (`audience`: `ledger`, `payments` or `portal`), with the scopes it "
        "asks for (default: all it holds for that audience). Send the credentials as HTTP Basic or in the body, "
        "not both; the body is a form (`application/x-www-form-urlencoded`) or JSON; `audience` may be given in "
        "the query string instead (as the services' API docs' token URL does). Repeated failures lock the "
        "client id out for a while (429 `too_many_attempts`, with `Retry-After`).",
        errors=[
            errors.InvalidRequest,
            errors.InvalidClient,
            errors.UnsupportedGrantType,
            errors.AudienceNotAllowed,
            errors.ScopeNotAllowed,
            errors.TooManyAttempts,
            errors.LockoutsUnavailable,
        ],
        examples=[
            OpenApiExample(
                "A token for the payments service",
                value={
                    "grant_type": "client_credentials",
                    "client_id": "cli_01m91tj5evb16g3wrkrk6xt9rh",
                    "client_secret": "s3cr3t-shown-once-at-creation",
                    "audience": "payments",
                    "scope": "payments:read payments:write",
                },
                request_only=True,
            ),
            OpenApiExample(
                "The token",
                value={
                    "access_token": "eyJhbGciOiJFZERTQSIsImtpZCI6Ij…",
                    "token_type": "Bearer",
                    "expires_in": 900,
                    "scope": "payments:read payments:write",
                },
                response_only=True,
            ),
        ],
        request={
            "application/json": TokenRequestSerializer,
            "application/x-www-form-urlencoded": TokenRequestSerializer,
        },
        responses={200: TokenResponseSerializer},
    )
    def post(self, request: Request) -> Response:
        try:
            client_id, client_secret, values = self._credentials(request)
        except OAuthError as exc:
            services.token_refusal_record(code=exc.code, client_id=self._claimed_client_id(request))
            raise
        except APIException:
            # Malformed body (unparsable, wrong media type, missing or unknown fields): an invalid request.
            services.token_refusal_record(code=InvalidRequest.code, client_id=self._claimed_client_id(request))
            raise
        issued = services.token_issue(  # audits the token it issues, or its refusal
            grant_type=values["grant_type"],
            client_id=client_id,
            client_secret=client_secret,
            audience=values["audience"],
            scope=values.get("scope") or None,
        )
        return Response(issued.as_response(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _credentials(self, request: Request) -> tuple[str, str, dict[str, Any]]:
        data = request.data
        if hasattr(data, "dict"):
            data = data.dict()
        audience = request.query_params.get("audience")
        if audience is not None and isinstance(data, dict):
            # The services' API docs name their audience in the token URL (services/kit/schema.py): Swagger UI's
            # client-credentials request has no field for it.
            if data.get("audience", audience) != audience:
                raise InvalidRequest("The audience in the query string and the one in the body differ.")
            data = {**data, "audience": audience}
        serializer = TokenRequestSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        basic = _basic_credentials(request)
        if basic and values.get("client_secret"):
            # RFC 6749 §2.3: a client must not use more than one authentication method per request.
            raise InvalidRequest("Send the client secret either as HTTP Basic credentials or in the body, not both.")
        client_id, client_secret = basic or (values.get("client_id"), values.get("client_secret"))
        if not client_id or not client_secret:
            raise InvalidClient("Send client_id and client_secret in the body or as HTTP Basic credentials.")
        return client_id, client_secret, values

    @staticmethod
    def _claimed_client_id(request: Request) -> str:
        """The client id a refused request named (Basic credentials, else the body), for its audit event only."""
        try:
            basic = _basic_credentials(request)
        except InvalidClient:
            basic = None
        if basic:
            return basic[0]
        try:
            data = request.data
        except APIException:
            return ""
        value = data.get("client_id") if hasattr(data, "get") else None
        return value if isinstance(value, str) else ""


def _caller_client(request: Request) -> str | None:
    """The machine client making the request (None for a portal user)."""
    return request.user.client_id if isinstance(request.user, ClientPrincipal) else None


_CLIENT = {
    "client_id": "cli_01m91tj5evb16g3wrkrk6xt9rh",
    "name": "shop-backend",
    "description": "The web shop's order service",
    "allowed_audiences": ["ledger", "payments"],
    "allowed_scopes": ["ledger:read", "payments:read", "payments:write"],
    "token_ttl_seconds": 900,
    "is_active": True,
    "secret_last4": "x9Qe",
    "created_at": "2026-12-01T08:00:00.000000Z",
    "updated_at": "2026-12-01T08:00:00.000000Z",
    "secret_rotated_at": None,
    "previous_secret_valid_until": None,
    "revoked_at": None,
    "last_used_at": "2026-12-04T09:31:00.000000Z",
}
_CLIENT_EXAMPLE = OpenApiExample("A machine client", value=_CLIENT, response_only=True)
_WITH_SECRET = OpenApiExample(
    "The client and its secret (shown once)",
    value=_CLIENT | {"client_secret": "k3Jz…x9Qe"},
    response_only=True,
    status_codes=["201", "200"],
)
_MANAGE_REFUSALS = (errors.GrantEscalation, errors.ManageScopeMissing, errors.CallerRevoked)


@extend_schema_view(
    list=api_operation(
        summary="List machine clients",
        description="Every machine client: its audiences and scopes, whether it is active, when its secret was "
        "rotated and when it last got a token. Secrets are never shown again after creation.",
        examples=[_CLIENT_EXAMPLE],
    ),
    retrieve=api_operation(
        summary="Get a machine client",
        description="One machine client by its id (`cli_…`).",
        examples=[_CLIENT_EXAMPLE],
    ),
)
class MachineClientViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Machine clients: list, read, create (secret shown once), rotate secret, revoke, unlock the token endpoint.

    Users by role (operators and admins manage); machine clients need ``identity:manage``, and only manage clients
    within their own grants (``services.client_manage_authorize``). Every refused change is audited.
    """

    queryset = MachineClient.objects.all()
    serializer_class = MachineClientSerializer
    filterset_fields = ["is_active", "name"]
    lookup_value_regex = "[^/]+"
    required_scopes = {"GET": {"portal:read"}, "*": {services.MANAGE_SCOPE}}

    def check_permissions(self, request: Request) -> None:
        try:
            super().check_permissions(request)
        except PermissionDenied as exc:
            if request.method not in SAFE_METHODS:
                code = exc.get_codes()
                services.client_refusal_record(
                    code=code if isinstance(code, str) else "permission_denied",
                    operation=self.action or "",
                    target_id=str(self.kwargs.get(self.lookup_field or "pk", ""))[:64],
                )
            raise

    def get_object(self) -> MachineClient:
        if not id_is_valid(self.kwargs.get(self.lookup_field or "pk"), "cli"):
            from services.kit.errors import NotFound

            raise NotFound("No machine client with that id.")
        return super().get_object()

    @api_operation(
        summary="Create a machine client",
        description="Creates a client for a system that calls Atrium's APIs, allowed the audiences and scopes "
        "given (a client managing clients can grant only what it holds). The answer shows the secret once: "
        "store it now.",
        errors=[errors.InvalidClientConfiguration, *_MANAGE_REFUSALS],
        examples=[
            OpenApiExample(
                "A client for the web shop",
                value={
                    "name": "shop-backend",
                    "description": "The web shop's order service",
                    "allowed_audiences": ["ledger", "payments"],
                    "allowed_scopes": ["ledger:read", "payments:read", "payments:write"],
                    "token_ttl_seconds": 900,
                },
                request_only=True,
            ),
            _WITH_SECRET,
        ],
        request=MachineClientCreateSerializer,
        responses={201: MachineClientWithSecretSerializer},
    )
    def create(self, request: Request) -> Response:
        serializer = MachineClientCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        client, secret = services.client_create(
            name=values["name"],
            description=values["description"],
            audiences=values["allowed_audiences"],
            scopes=values["allowed_scopes"],
            token_ttl_seconds=values["token_ttl_seconds"],
            created_by=request.user if not isinstance(request.user, ClientPrincipal) else None,
            by_client=_caller_client(request),
        )
        body = MachineClientWithSecretSerializer(client).data | {"client_secret": secret}
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    @api_operation(
        summary="Rotate a client's secret",
        description="Issues a new secret (shown once). The old one keeps working for `grace_seconds` so that the "
        "client can be redeployed without downtime.",
        errors=list(_MANAGE_REFUSALS),
        examples=[
            OpenApiExample("Keep the old secret for an hour", value={"grace_seconds": 3600}, request_only=True),
            _WITH_SECRET,
        ],
        request=RotateSecretSerializer,
        responses={200: MachineClientWithSecretSerializer},
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        client = self.get_object()
        options = RotateSecretSerializer(data=request.data if request.data else {})
        options.is_valid(raise_exception=True)
        secret = services.client_rotate_secret(
            client=client, grace_seconds=options.validated_data.get("grace_seconds"), by_client=_caller_client(request)
        )
        body = MachineClientWithSecretSerializer(client).data | {"client_secret": secret}
        return Response(body, headers={"Cache-Control": "no-store"})

    @api_operation(
        summary="Revoke a machine client",
        description="Ends the client for good: it gets no new token, and every service refuses its tokens "
        "within seconds (the revocation list), not when they expire.",
        errors=list(_MANAGE_REFUSALS),
        examples=[
            OpenApiExample(
                "The client, revoked",
                value=_CLIENT | {"is_active": False, "revoked_at": "2026-12-04T10:00:00.000000Z"},
                response_only=True,
            )
        ],
        request=None,
        responses={200: MachineClientSerializer},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        client = services.client_revoke(client=self.get_object(), by_client=_caller_client(request))
        return Response(MachineClientSerializer(client).data)

    @api_operation(
        summary="Unlock a client at the token endpoint",
        description="Ends the client's lockout after repeated failed secrets, before it runs out (audited).",
        errors=[errors.LockoutsUnavailable, *_MANAGE_REFUSALS],
        examples=[
            OpenApiExample(
                "It was locked",
                value={"client_id": "cli_01m91tj5evb16g3wrkrk6xt9rh", "was_locked": True},
                response_only=True,
            )
        ],
        request=None,
        responses={
            200: inline_serializer(
                "TokenLockoutCleared", {"client_id": serializers.CharField(), "was_locked": serializers.BooleanField()}
            )
        },
    )
    @action(detail=True, methods=["post"])
    def unlock(self, request: Request, pk: str | None = None) -> Response:
        """End the client's token-endpoint lockout after repeated failed secrets (audited)."""
        client = self.get_object()
        caller = _caller_client(request)
        if caller is not None:
            services.client_manage_authorize(
                caller_id=caller,
                operation="unlock",
                audiences=client.allowed_audiences,
                scopes=client.allowed_scopes,
                target_id=client.id,
            )
        was_locked = throttle.token_lockout_clear(client_id=client.id)
        return Response({"client_id": client.id, "was_locked": was_locked})

    def get_permissions(self) -> list[Any]:
        # Writes need change/add permission; POST actions map to "change".
        if self.action in ("rotate_secret", "revoke", "unlock"):
            self.required_user_permissions = ["identity.change_machineclient"]
        return super().get_permissions()


class MeView(APIView):
    """Who is calling: a portal user (with roles) or a machine client (with scopes)."""

    permission_classes = [IsAuthenticated]

    @api_operation(
        summary="Who am I (portal)",
        description="Who is calling the portal: a person (with their roles) or a machine client (with the "
        "token's scopes).",
        examples=[
            OpenApiExample(
                "A machine client",
                value={
                    "kind": "client",
                    "id": "cli_01m91tj5evb16g3wrkrk6xt9rh",
                    "name": "shop-backend",
                    "roles": [],
                    "scopes": ["portal:read"],
                },
                response_only=True,
            )
        ],
        responses=inline_serializer(
            "Me",
            {
                "kind": serializers.ChoiceField(choices=["user", "client"]),
                "id": serializers.CharField(),
                "name": serializers.CharField(),
                "roles": serializers.ListField(child=serializers.CharField()),
                "scopes": serializers.ListField(child=serializers.CharField()),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        user = request.user
        if isinstance(user, ClientPrincipal):
            body: dict[str, Any] = {
                "kind": "client",
                "id": user.client_id,
                "name": user.claims.get("client_name", ""),
                "roles": [],
                "scopes": sorted(user.scopes),
            }
        else:
            body = {
                "kind": "user",
                "id": str(user.pk),
                "name": user.get_username(),
                "roles": user_roles(user),
                "scopes": [],
            }
        return Response(body)
