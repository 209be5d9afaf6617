"""Catalog API: services register themselves (scope ``catalog:register``) and heartbeat their instances;
people (viewer and up) and clients with ``portal:read`` or ``catalog:register`` read the catalog: services
(filtered, each with its derived status), their instances, health history (single checks and hourly counts),
teams and the dependency graph."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.catalog import selectors, services
from portal.catalog.api.permissions import READ_SCOPES, CatalogAccess
from portal.catalog.api.serializers import (
    CallsInputSerializer,
    HealthCheckSerializer,
    HealthHoursSerializer,
    HealthWindowSerializer,
    HeartbeatInputSerializer,
    InstanceSerializer,
    ManifestSerializer,
    ServiceGroupSerializer,
    ServiceSerializer,
    TeamSerializer,
    graph_edge,
)
from portal.catalog.errors import InvalidSlug
from portal.catalog.filters import HealthCheckFilterSet, InstanceFilterSet, ServiceFilterSet
from portal.catalog.graph import graph, service_graph
from portal.catalog.health import uptime_detail
from portal.catalog.models import SLUG_REGEX, HealthCheck, HealthHour, Instance, Service, Team
from services.kit.auth import ClientPrincipal
from services.kit.pagination import CursorPagination
from services.kit.serializers import ProblemSerializer

# Reads: people by role, machine clients with portal:read or catalog:register (permissions.py); writes need
# catalog:register.
WRITE = {"*": {"catalog:register"}}


def _client_id(request: Request) -> str | None:
    return request.user.client_id if isinstance(request.user, ClientPrincipal) else None


class CatalogRead:
    """What every catalog read shares: who may read, and one moment its statuses are derived at."""

    permission_classes = [CatalogAccess]
    read_scopes = READ_SCOPES

    def status_context(self) -> dict[str, Any]:
        return {"now": timezone.now()}


class InstanceCursor(CursorPagination):
    ordering = ("-last_heartbeat", "-id")


class HealthCheckCursor(CursorPagination):
    ordering = ("-checked_at", "-id")


SLUG = OpenApiParameter("slug", OpenApiTypes.STR, OpenApiParameter.PATH, description="The service's slug.")
TEAM_SLUG = OpenApiParameter("slug", OpenApiTypes.STR, OpenApiParameter.PATH, description="The team's slug.")
PROBLEM = "application/problem+json"
NOT_FOUND = {(404, PROBLEM): OpenApiResponse(ProblemSerializer, description="service_not_found")}
BAD_FILTER = {
    (400, PROBLEM): OpenApiResponse(ProblemSerializer, description="validation_error: one entry per bad parameter")
}


class ServiceListView(CatalogRead, generics.ListAPIView):
    """Every service (not paginated: a catalog holds tens or hundreds), filtered, each with its status."""

    queryset = Service.objects.all()
    serializer_class = ServiceSerializer
    filterset_class = ServiceFilterSet
    pagination_class = None

    @extend_schema(responses={200: ServiceSerializer(many=True), **BAD_FILTER})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        found = list(self.filter_queryset(selectors.service_queryset()))
        context = {**self.status_context(), "uptime": uptime_detail(found)}
        return Response(ServiceSerializer(found, many=True, context=context).data)


class ServiceDetailView(CatalogRead, APIView):
    """``PUT`` registers (or updates) the service from its manifest; ``GET`` reads it."""

    queryset = Service.objects.all()
    required_scopes = WRITE

    @extend_schema(responses={200: ServiceSerializer, **NOT_FOUND})
    def get(self, request: Request, slug: str) -> Response:
        service = selectors.service_get(slug=slug)
        context = {**self.status_context(), "uptime": uptime_detail([service])}
        return Response(ServiceSerializer(service, context=context).data)

    @extend_schema(
        request=ManifestSerializer,
        responses={
            200: ServiceSerializer,
            201: ServiceSerializer,
            (422, PROBLEM): OpenApiResponse(
                ProblemSerializer, description="health_url_invalid, health_url_blocked, health_url_foreign_host"
            ),
        },
    )
    def put(self, request: Request, slug: str) -> Response:
        if not re.fullmatch(SLUG_REGEX, slug):
            raise InvalidSlug(f"{slug!r}: 1 to 50 characters, lower-case letters, digits and dashes, a letter first.")
        manifest = ManifestSerializer(data=request.data)
        manifest.is_valid(raise_exception=True)
        registration = services.service_register(
            slug=slug, manifest=dict(manifest.validated_data), client_id=_client_id(request)
        )
        service = selectors.service_get(slug=slug)
        body = ServiceSerializer(service, context={**self.status_context(), "uptime": uptime_detail([service])}).data
        return Response(body, status=status.HTTP_201_CREATED if registration.created else status.HTTP_200_OK)


class InstanceListView(CatalogRead, generics.ListAPIView):
    """A service's instances, gone ones included, the latest heartbeat first."""

    queryset = Instance.objects.all()
    serializer_class = InstanceSerializer
    filterset_class = InstanceFilterSet
    pagination_class = InstanceCursor

    def get_queryset(self) -> QuerySet[Instance]:
        return selectors.instance_queryset(slug=self.kwargs.get("slug", ""))

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), **self.status_context()}

    @extend_schema(parameters=[SLUG], responses={200: InstanceSerializer(many=True), **BAD_FILTER, **NOT_FOUND})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        selectors.service_id_get(slug=kwargs["slug"])
        return self.list(request, *args, **kwargs)


class HealthCheckListView(CatalogRead, generics.ListAPIView):
    """A service's single health checks, newest first (kept ``CATALOG_HEALTH_RAW_DAYS``; older ones are in
    ``health/hours``)."""

    queryset = HealthCheck.objects.all()
    serializer_class = HealthCheckSerializer
    filterset_class = HealthCheckFilterSet
    pagination_class = HealthCheckCursor

    def get_queryset(self) -> QuerySet[HealthCheck]:
        return selectors.health_check_queryset(slug=self.kwargs.get("slug", ""))

    @extend_schema(parameters=[SLUG], responses={200: HealthCheckSerializer(many=True), **BAD_FILTER, **NOT_FOUND})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        selectors.service_id_get(slug=kwargs["slug"])
        return self.list(request, *args, **kwargs)


class HealthHoursView(CatalogRead, APIView):
    """A service's health checks counted by hour over a window, from the hourly roll-ups and the single checks
    together (so a window spanning both has every hour complete)."""

    queryset = HealthHour.objects.all()

    @extend_schema(
        parameters=[SLUG, HealthWindowSerializer],
        responses={200: HealthHoursSerializer, **BAD_FILTER, **NOT_FOUND},
    )
    def get(self, request: Request, slug: str) -> Response:
        service_id = selectors.service_id_get(slug=slug)
        window = HealthWindowSerializer(data=request.query_params)
        window.is_valid(raise_exception=True)
        since, until = window.validated_data["since"], window.validated_data["until"]
        hours = selectors.health_hours(service_id=service_id, since=since, until=until)
        start, end = selectors.hours_window(since, until)
        body = {"service": slug, "since": start, "until": end, "hours": hours}
        return Response(HealthHoursSerializer(body).data)


class TeamListView(CatalogRead, generics.ListAPIView):
    """Every team (not paginated), with the services it owns and their status."""

    queryset = Team.objects.all()
    serializer_class = TeamSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Team]:
        return selectors.team_queryset()

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), **self.status_context()}


class TeamDetailView(CatalogRead, APIView):
    """A team: its contact, who is on call, and the services it owns with their status."""

    queryset = Team.objects.all()

    @extend_schema(
        parameters=[TEAM_SLUG],
        responses={
            200: TeamSerializer,
            (404, PROBLEM): OpenApiResponse(ProblemSerializer, description="team_not_found"),
        },
    )
    def get(self, request: Request, slug: str) -> Response:
        team = selectors.team_get(slug=slug)
        return Response(TeamSerializer(team, context=self.status_context()).data)


class InstanceHeartbeatView(APIView):
    access_log_quiet = True  # every agent calls it every few seconds: successes are DEBUG lines
    queryset = Instance.objects.all()
    required_scopes = WRITE

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

    access_log_quiet = True  # every agent calls it every few seconds: successes are DEBUG lines
    queryset = Service.objects.all()
    required_scopes = WRITE

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


class GraphView(CatalogRead, APIView):
    """Nodes (services, resources) and edges, each declared and/or observed, with drift flagged."""

    queryset = Service.objects.all()

    @extend_schema(
        responses={
            200: inline_serializer(
                "CatalogGraph",
                {
                    "nodes": serializers.ListField(child=serializers.DictField()),
                    "edges": serializers.ListField(child=graph_edge()),
                },
            )
        }
    )
    def get(self, request: Request) -> Response:
        return Response(graph().as_dict())


# --- /api/v2/catalog: services, not processes (docs/catalog.md, "Services (API v2)")

V2 = ["catalog (v2: services)"]
GROUP_SLUG = OpenApiParameter(
    "slug", OpenApiTypes.STR, OpenApiParameter.PATH, description="The service's slug (e.g. ledger)."
)


class ServiceGroupListView(CatalogRead, APIView):
    """Every service, by slug: its processes by role with their statuses, its own status and its API's uptime
    over the time checks observed. Not paginated (a catalog holds tens of services)."""

    queryset = Service.objects.all()

    @extend_schema(
        tags=V2,
        summary="List services with their processes and status",
        description="Every service, by slug. A service groups the processes that name it as `part_of` (its web "
        "process, its workers, relay, beat, monitor). Its status is `critical` when its API is down, `degraded` when "
        "another of its processes is down or warning. Uptime is its API's, over the time health checks observed: "
        "time nothing was checked is unknown, not up.",
        responses={200: ServiceGroupSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        found = selectors.service_groups(now=timezone.now())
        return Response(ServiceGroupSerializer(found, many=True).data)


class ServiceGroupDetailView(CatalogRead, APIView):
    """One service: its processes by role, its status and why, its API's uptime."""

    queryset = Service.objects.all()

    @extend_schema(
        tags=V2,
        summary="Read a service with its processes and status",
        description="One service by slug, as in the list. An unknown slug is `404 service_not_found`.",
        parameters=[GROUP_SLUG],
        responses={200: ServiceGroupSerializer, **NOT_FOUND},
    )
    def get(self, request: Request, slug: str) -> Response:
        return Response(ServiceGroupSerializer(selectors.service_group_get(slug=slug, now=timezone.now())).data)


class ResourcesSerializer(serializers.Serializer):
    resources = serializers.BooleanField(
        default=False, help_text="true: resources (postgres, redis, queues) as nodes of their own, with edges."
    )


class ServiceGraphView(CatalogRead, APIView):
    """The dependency graph between services (not processes)."""

    queryset = Service.objects.all()

    @extend_schema(
        tags=V2,
        summary="Read the dependency graph between services",
        description="A node per service (its status, processes and the resources they use), an edge per pair of "
        "services one of whose processes declares or calls the other (declared, observed, drift). Edges inside a "
        "service (a worker calling its own API) are left out. With `resources=true`, resources are nodes too.",
        parameters=[ResourcesSerializer],
        responses={
            200: inline_serializer(
                "CatalogServiceGraph",
                {
                    "nodes": serializers.ListField(child=serializers.DictField()),
                    "edges": serializers.ListField(child=graph_edge()),
                },
            ),
            **BAD_FILTER,
        },
    )
    def get(self, request: Request) -> Response:
        query = ResourcesSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(service_graph(resources=query.validated_data["resources"]).as_dict())
