"""Catalog API: services register themselves (scope ``catalog:register``) and heartbeat their instances;
people (viewer and up) and clients with ``portal:read`` read the catalog."""

from __future__ import annotations

import re

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.catalog import services
from portal.catalog.api.serializers import (
    GRAPH_EDGE,
    CallsInputSerializer,
    HeartbeatInputSerializer,
    InstanceSerializer,
    ManifestSerializer,
    ServiceSerializer,
)
from portal.catalog.errors import ServiceNotFound
from portal.catalog.graph import graph
from portal.catalog.health import uptime
from portal.catalog.models import SLUG_REGEX, Instance, Service
from services.kit.auth import ClientPrincipal
from services.kit.errors import DomainError

REGISTER = {"GET": {"portal:read"}, "*": {"catalog:register"}}


class InvalidSlug(DomainError):
    code = "invalid_slug"
    status = 400
    title = "Invalid service slug"


def _client_id(request: Request) -> str | None:
    return request.user.client_id if isinstance(request.user, ClientPrincipal) else None


def _service(slug: str) -> Service:
    service = (
        Service.objects.select_related("owner").prefetch_related("dependencies", "instances").filter(slug=slug).first()
    )
    if service is None:
        raise ServiceNotFound(f"No service {slug!r} in the catalog.")
    return service


class ServiceListView(APIView):
    queryset = Service.objects.all()
    required_scopes = REGISTER

    @extend_schema(responses={200: ServiceSerializer(many=True)})
    def get(self, request: Request) -> Response:
        services_ = list(Service.objects.select_related("owner").prefetch_related("dependencies", "instances"))
        return Response(ServiceSerializer(services_, many=True, context={"uptime": uptime(services_)}).data)


class ServiceDetailView(APIView):
    """``PUT`` registers (or updates) the service from its manifest; ``GET`` reads it."""

    queryset = Service.objects.all()
    required_scopes = REGISTER

    @extend_schema(responses={200: ServiceSerializer})
    def get(self, request: Request, slug: str) -> Response:
        service = _service(slug)
        return Response(ServiceSerializer(service, context={"uptime": uptime([service])}).data)

    @extend_schema(request=ManifestSerializer, responses={200: ServiceSerializer, 201: ServiceSerializer})
    def put(self, request: Request, slug: str) -> Response:
        if not re.fullmatch(SLUG_REGEX, slug):
            raise InvalidSlug(f"{slug!r}: 1 to 50 characters, lower-case letters, digits and dashes, a letter first.")
        manifest = ManifestSerializer(data=request.data)
        manifest.is_valid(raise_exception=True)
        registration = services.service_register(
            slug=slug, manifest=dict(manifest.validated_data), client_id=_client_id(request)
        )
        service = _service(slug)
        body = ServiceSerializer(service, context={"uptime": uptime([service])}).data
        return Response(body, status=status.HTTP_201_CREATED if registration.created else status.HTTP_200_OK)


class InstanceHeartbeatView(APIView):
    queryset = Instance.objects.all()
    required_scopes = {"*": {"catalog:register"}}

    @extend_schema(
        request=HeartbeatInputSerializer,
        responses={
            200: inline_serializer(
                "Heartbeat",
                {"instance": InstanceSerializer(), "heartbeat_interval_seconds": serializers.IntegerField()},
            )
        },
    )
    def post(self, request: Request, slug: str, instance: str) -> Response:
        beat = HeartbeatInputSerializer(data=request.data if request.data else {})
        beat.is_valid(raise_exception=True)
        row, created = services.instance_heartbeat(
            slug=slug, instance=instance[:200], client_id=_client_id(request), **beat.validated_data
        )
        return Response(
            {"instance": InstanceSerializer(row).data, "heartbeat_interval_seconds": services.heartbeat_interval()},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class CallsReportView(APIView):
    """A service reports the calls it received since its last report, by calling machine client."""

    queryset = Service.objects.all()
    required_scopes = {"*": {"catalog:register"}}

    @extend_schema(
        request=CallsInputSerializer,
        responses={200: inline_serializer("CallsRecorded", {"callers": serializers.IntegerField()})},
    )
    def post(self, request: Request, slug: str) -> Response:
        report = CallsInputSerializer(data=request.data)
        report.is_valid(raise_exception=True)
        recorded = services.calls_report(
            slug=slug, client_id=_client_id(request), callers=report.validated_data["callers"]
        )
        return Response({"callers": recorded})


class GraphView(APIView):
    """Nodes (services, resources) and edges, each declared and/or observed, with drift flagged."""

    queryset = Service.objects.all()
    required_scopes = {"GET": {"portal:read"}}

    @extend_schema(
        responses={
            200: inline_serializer(
                "CatalogGraph",
                {
                    "nodes": serializers.ListField(child=serializers.DictField()),
                    "edges": serializers.ListField(child=GRAPH_EDGE),
                },
            )
        }
    )
    def get(self, request: Request) -> Response:
        return Response(graph().as_dict())
