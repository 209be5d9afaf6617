"""Webhooks API: parse → call a service or selector → serialize."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from services.kit.canonical_urls import id_segment
from services.kit.pagination import CursorPagination, IdCursor
from services.kit.schema import api_operation
from services.webhooks import errors, selectors, services
from services.webhooks.api import examples
from services.webhooks.api.serializers import (
    AttemptSerializer,
    DeliverySerializer,
    EndpointCreateSerializer,
    EndpointDisableSerializer,
    EndpointSerializer,
    EndpointUpdateSerializer,
    EventTypeSerializer,
    MessageCreateSerializer,
    MessageDetailSerializer,
    MessageSerializer,
    PublicKeySerializer,
    RecoverSerializer,
    RecoverySerializer,
    ResendSerializer,
    SecretRotateSerializer,
    SecretSerializer,
)
from services.webhooks.filtersets import AttemptFilterSet, MessageFilterSet
from services.webhooks.models import Endpoint

WRITE = "webhooks:write"


def _validated(
    serializer_class: type[Serializer], request: Request, *, audit_action: str, object_type: str, object_id: str = ""
) -> dict[str, Any]:
    """The request body checked by ``serializer_class``; a refusal (400 ``validation_error``) is audited as a
    ``failure`` of ``audit_action`` before it is answered."""
    serializer = serializer_class(data=request.data)
    if not serializer.is_valid():
        services.refusal_record(
            audit_action,
            object_type=object_type,
            object_id=object_id,
            code="validation_error",
            detail="; ".join(sorted(str(field) for field in serializer.errors)),
        )
        raise ValidationError(serializer.errors)
    return dict(serializer.validated_data)


class SeqCursor(CursorPagination):
    """Newest first by creation order (a message's ``seq``)."""

    ordering = "-seq"


class AttemptCursor(CursorPagination):
    """Newest first by id (attempts are numbered as their results are written): the primary key's index, where
    ordering by ``at`` would sort the whole log (``at`` has a BRIN index, for retention and time ranges)."""

    ordering = "-id"


class NameCursor(CursorPagination):
    """Alphabetical by name."""

    ordering = "name"


# ---------------------------------------------------------------------------------------------------------
# Endpoints


@extend_schema_view(
    list=api_operation(
        summary="List endpoints",
        description="Endpoints, newest first, each with its delivery health: `stats` of the last 24 h "
        "(attempts, successes, `success_rate`), `last_success_at`, `last_error` and, when disabled, "
        "`disabled_reason` (`gone`: it answered 410; `failing`: only failures for 5 days; or an operator's).",
        examples=[examples.endpoint],
    ),
    retrieve=api_operation(
        summary="Get an endpoint",
        description="An endpoint, its filter and limits, and its delivery health (the last 24 h). Its secret is "
        "never in it: `GET /api/v1/endpoints/{id}/secret`.",
        errors=[errors.EndpointNotFound],
        examples=[examples.endpoint],
    ),
)
class EndpointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Webhook endpoints: where messages are sent, which, how fast, signed with which secret."""

    queryset = selectors.endpoint_list()
    serializer_class = EndpointSerializer
    pagination_class = IdCursor
    filter_backends: list[Any] = []
    lookup_value_regex = id_segment()

    def get_object(self) -> Endpoint:
        return selectors.endpoint_get(self.kwargs["pk"])

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        """Endpoints are shown with their 24 h stats: one grouped query for the page."""
        instance = args[0] if args else None
        if instance is not None:
            items = list(instance) if kwargs.get("many") else [instance]
            kwargs["context"] = {
                **self.get_serializer_context(),
                "stats": selectors.endpoint_stats([e.id for e in items]),
            }
        return super().get_serializer(*args, **kwargs)

    def _answer(self, endpoint: Endpoint, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(endpoint).data, status=code)

    @api_operation(
        summary="Create an endpoint",
        description="Subscribes a URL to event types (`payment.settled`, `payment.*`, `*`), optionally only on "
        "some `channels` (ledger account ids: a merchant gets only its own payments). The URL is checked now "
        "and at every delivery: it must be http(s) to a public address (private, loopback, link-local and "
        "metadata addresses are refused unless allow-listed: 422 `endpoint_url_not_allowed` with the `reason`), "
        "https in production. Each endpoint has its own signing secret (`whsec_…`): yours or generated; read "
        "it with `GET /api/v1/endpoints/{id}/secret`. `v1a: true` also signs with Ed25519.",
        errors=[
            errors.EndpointUrlNotAllowed,
            errors.UnknownEventType,
            errors.InvalidSecret,
            errors.InvalidMetadata,
        ],
        examples=[examples.endpoint_create, examples.endpoint_create_all, examples.endpoint_created],
        request=EndpointCreateSerializer,
        responses={201: EndpointSerializer},
    )
    def create(self, request: Request) -> Response:
        data = _validated(
            EndpointCreateSerializer, request, audit_action="webhooks.endpoint.created", object_type="endpoint"
        )
        return self._answer(services.endpoint_create(**data), status.HTTP_201_CREATED)

    @api_operation(
        summary="Update an endpoint",
        description="Changes an endpoint's URL (checked again), description, event types, channels, limits, "
        "ordering, metadata or `v1a` signing; fields left out stay as they are. Enable or disable it with its "
        "own operations, rotate its secret with `secret/rotate`.",
        errors=[
            errors.EndpointNotFound,
            errors.EndpointUrlNotAllowed,
            errors.UnknownEventType,
            errors.InvalidMetadata,
        ],
        examples=[examples.endpoint_update, examples.endpoint_updated],
        request=EndpointUpdateSerializer,
        responses={200: EndpointSerializer},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        data = _validated(
            EndpointUpdateSerializer,
            request,
            audit_action="webhooks.endpoint.updated",
            object_type="endpoint",
            object_id=pk,
        )
        return self._answer(services.endpoint_update(endpoint_id=pk, **data))

    @api_operation(
        summary="Delete an endpoint",
        description="Deletes an endpoint and its pending deliveries: nothing more is sent to it. Its attempts "
        "stay in the attempt log until their retention.",
        errors=[errors.EndpointNotFound],
        request=None,
        responses={204: None},
    )
    def destroy(self, request: Request, pk: str) -> Response:
        services.endpoint_delete(endpoint_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @api_operation(
        summary="Enable an endpoint",
        description="Sends to a disabled endpoint again: its pending messages go out (in order, if `ordered`), and "
        "the 5-day failure clock starts afresh. Messages that failed meanwhile can be recovered (`recover`).",
        errors=[errors.EndpointNotFound],
        examples=[examples.endpoint_enabled],
        request=None,
        responses={200: EndpointSerializer},
    )
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str) -> Response:
        return self._answer(services.endpoint_enable(endpoint_id=pk))

    @api_operation(
        summary="Disable an endpoint",
        description="Stops sending to an endpoint, with a `reason` shown on it. Its messages keep queueing "
        "(pending) and go out when it is enabled again.",
        errors=[errors.EndpointNotFound],
        examples=[examples.endpoint_disable, examples.endpoint_disabled],
        request=EndpointDisableSerializer,
        responses={200: EndpointSerializer},
    )
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str) -> Response:
        data = _validated(
            EndpointDisableSerializer,
            request,
            audit_action="webhooks.endpoint.disabled",
            object_type="endpoint",
            object_id=pk,
        )
        return self._answer(services.endpoint_disable(endpoint_id=pk, **data))

    @api_operation(
        summary="Rotate an endpoint's secret",
        description="Gives the endpoint a new secret (yours, or generated). For `overlap_seconds` (default 24 h) "
        "every delivery carries a signature under each secret, space-separated in `webhook-signature`, so the "
        "receiver can switch at its pace. Read the new secret with `GET …/secret`.",
        errors=[errors.EndpointNotFound, errors.InvalidSecret],
        examples=[examples.secret_rotate, examples.secret_rotated],
        request=SecretRotateSerializer,
        responses={200: EndpointSerializer},
    )
    @action(detail=True, methods=["post"], url_path="secret/rotate")
    def secret_rotate(self, request: Request, pk: str) -> Response:
        data = _validated(
            SecretRotateSerializer,
            request,
            audit_action="webhooks.endpoint.secret_rotated",
            object_type="endpoint",
            object_id=pk,
        )
        return self._answer(services.endpoint_secret_rotate(endpoint_id=pk, **data))

    @api_operation(
        summary="Get an endpoint's Ed25519 public key",
        description="The key that verifies the endpoint's `v1a` signatures (`whpk_` + base64 of the raw 32 "
        "bytes). 404 `public_key_not_found` while `v1a` is off.",
        errors=[errors.EndpointNotFound, errors.PublicKeyNotFound],
        examples=[examples.public_key],
        responses={200: PublicKeySerializer},
    )
    @action(detail=True, methods=["get"], url_path="public-key")
    def public_key(self, request: Request, pk: str) -> Response:
        return Response({"endpoint": pk, "public_key": selectors.endpoint_public_key(pk)})

    @api_operation(
        summary="Recover an endpoint's failed messages",
        description="Sends again every message that failed for this endpoint (ran out of attempts) among those "
        "created from `since` to `until` (default now): a background job, in bounded batches, that resumes "
        "where it stopped after a crash. Answers 202 with the recovery; follow it at "
        "`GET /api/v1/recoveries/{id}`. The endpoint must be enabled.",
        errors=[errors.EndpointNotFound, errors.EndpointDisabled, errors.InvalidRecoveryWindow],
        examples=[examples.recover, examples.recovery_queued],
        request=RecoverSerializer,
        responses={202: RecoverySerializer},
    )
    @action(detail=True, methods=["post"])
    def recover(self, request: Request, pk: str) -> Response:
        data = _validated(
            RecoverSerializer, request, audit_action="webhooks.recovery.requested", object_type="endpoint", object_id=pk
        )
        recovery = services.recovery_request(endpoint_id=pk, **data)
        return Response(RecoverySerializer(recovery).data, status=status.HTTP_202_ACCEPTED)


class EndpointSecretView(APIView):
    """An endpoint's signing secret, for an operator: needs ``webhooks:write``, and every read is audited."""

    required_scopes = {"GET": {WRITE}}

    @api_operation(
        summary="Get an endpoint's signing secret",
        description="The endpoint's secret (`whsec_…`: verify `webhook-signature` with it, e.g. with the "
        "`standardwebhooks` libraries), and during a rotation's overlap the previous one. Needs "
        "`webhooks:write`; every read is recorded in the audit trail.",
        errors=[errors.EndpointNotFound],
        examples=[examples.secret],
        responses={200: SecretSerializer},
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(SecretSerializer(services.endpoint_secret_read(endpoint_id=pk)).data)


# ---------------------------------------------------------------------------------------------------------
# Event types


@extend_schema_view(
    list=api_operation(
        summary="List event types",
        description="The catalog of event types messages can have, alphabetical: each with a description, the "
        "JSON Schema of its `data` and an example. Archived types are listed (`archived: true`) but refused "
        "for new messages.",
        examples=[examples.event_type],
    ),
    retrieve=api_operation(
        summary="Get an event type",
        description="An event type by name (`payment.settled`): its description, JSON Schema and example.",
        errors=[errors.EventTypeNotFound],
        examples=[examples.event_type],
    ),
)
class EventTypeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The event-type catalog."""

    queryset = selectors.event_type_list()
    serializer_class = EventTypeSerializer
    pagination_class = NameCursor
    filter_backends: list[Any] = []
    lookup_field = "name"
    lookup_value_regex = r"[^/]+"

    def get_object(self) -> Any:
        return selectors.event_type_get(self.kwargs["name"])


# ---------------------------------------------------------------------------------------------------------
# Messages


@extend_schema_view(
    list=api_operation(
        summary="List messages",
        description="Messages, newest first. Filter by `type`, `channel`, `object_id` (the object a message is "
        "about: `pay_…`, `txn_…`), `request_id` (the request that caused it) or creation time (`after`, "
        "`before`); follow `next` for the next page.",
        examples=[examples.message],
    ),
    retrieve=api_operation(
        summary="Get a message",
        description="A message and its deliveries: one per endpoint it was sent to, with its state (`pending`, "
        "`succeeded`, `failed`, `canceled`), attempts so far and the last status. Every attempt is in "
        "`GET /api/v1/attempts?message={id}`.",
        errors=[errors.MessageNotFound],
        examples=[examples.message_detail],
        responses={200: MessageDetailSerializer},
    ),
)
class MessageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Messages: one per event, fanned out to every endpoint whose filter takes it."""

    queryset = selectors.message_list()
    serializer_class = MessageSerializer
    filterset_class = MessageFilterSet
    pagination_class = SeqCursor
    lookup_value_regex = id_segment()
    max_body_setting = "WEBHOOKS_MAX_MESSAGE_BYTES"  # 256 KiB: larger is 413 payload_too_large

    def get_object(self) -> Any:
        return selectors.message_get(self.kwargs["pk"])

    def get_serializer_class(self) -> type[Serializer]:
        return MessageDetailSerializer if self.action == "retrieve" else MessageSerializer

    @api_operation(
        summary="Send a message",
        description="Sends an event of a known type (`GET /api/v1/event-types`) to every enabled endpoint "
        "subscribed to it (and to one of its `channels`, if the endpoint names channels). `data` must be valid "
        "against the type's JSON Schema (422 `invalid_payload`); an unknown or archived type is 422 "
        "`unknown_event_type`; a body over 256 KiB is 413. Accepted at once (202) and delivered by the "
        "dispatcher. Give an `event_id` to send safely again: the same id answers the first message.",
        errors=[errors.UnknownEventType, errors.InvalidPayload],
        examples=[examples.message_create, examples.message_created],
        request=MessageCreateSerializer,
        responses={202: MessageSerializer},
    )
    def create(self, request: Request) -> Response:
        data = _validated(
            MessageCreateSerializer, request, audit_action="webhooks.message.created", object_type="message"
        )
        message = services.message_send(source=request.user.client_id, **data)
        return Response(MessageSerializer(message).data, status=status.HTTP_202_ACCEPTED)

    @api_operation(
        summary="Resend a message to an endpoint",
        description="Sends the message to the `endpoint` again, now, with a fresh retry schedule (its attempts are "
        "marked `manual`), whatever became of it before; it is made if the endpoint never had it (its filter "
        "must take the message: 422 `endpoint_not_subscribed` otherwise). The endpoint must be enabled.",
        errors=[
            errors.MessageNotFound,
            errors.EndpointNotFound,
            errors.EndpointDisabled,
            errors.EndpointNotSubscribed,
        ],
        examples=[examples.resend, examples.resent],
        request=ResendSerializer,
        responses={202: DeliverySerializer},
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def resend(self, request: Request, pk: str) -> Response:
        data = _validated(
            ResendSerializer, request, audit_action="webhooks.message.resent", object_type="message", object_id=pk
        )
        delivery = services.message_resend(message_id=pk, endpoint_id=data["endpoint"])
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


# ---------------------------------------------------------------------------------------------------------
# Attempts, recoveries


@extend_schema_view(
    list=api_operation(
        summary="Search the attempt log",
        description="Every attempt to deliver a message, newest first: when, how long, the HTTP status, the "
        "first 4 KiB of the answer and the kind of failure (`timeout`, `connect`, `dns`, `tls`, "
        "`ssrf_blocked`, `status`). Filter by `endpoint`, `message`, `status`, `error` and time (`after`, "
        "`before`). Kept 30 days.",
        examples=[examples.attempt],
    ),
)
class AttemptViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The attempt log."""

    queryset = selectors.attempt_list()
    serializer_class = AttemptSerializer
    filterset_class = AttemptFilterSet
    pagination_class = AttemptCursor


class RecoveryView(APIView):
    """A recovery's progress."""

    @api_operation(
        summary="Get a recovery",
        description="A recovery of an endpoint's failed messages: `queued`, `running` (with the count "
        "`recovered` so far) or `done`.",
        errors=[errors.RecoveryNotFound],
        examples=[examples.recovery],
        responses={200: RecoverySerializer},
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(RecoverySerializer(selectors.recovery_get(pk)).data)
