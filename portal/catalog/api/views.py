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
from drf_spectacular.utils import OpenApiParameter, extend_schema_view, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.catalog import errors, selectors, services
from portal.catalog.api import examples
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
from portal.catalog.filters import HealthCheckFilterSet, InstanceFilterSet, ServiceFilterSet
from portal.catalog.graph import graph, service_graph
from portal.catalog.health import uptime_detail
from portal.catalog.models import SLUG_REGEX, HealthCheck, HealthHour, Instance, Service, Team
from services.kit.auth import ClientPrincipal
from services.kit.pagination import CursorPagination
from services.kit.schema import api_operation

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


class ServiceListView(CatalogRead, generics.ListAPIView):
    """Every service (not paginated: a catalog holds tens or hundreds), filtered, each with its status."""

    queryset = Service.objects.all()
    serializer_class = ServiceSerializer
    filterset_class = ServiceFilterSet
    pagination_class = None

    @api_operation(
        summary="List services",
        description="Every service in the catalog with its owner, links, dependencies, instances, status "
        "(from its health checks and heartbeats) and uptime. Filter by team, tier, lifecycle, tag or status.",
        examples=[examples.service],
        responses={200: ServiceSerializer(many=True)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        found = list(self.filter_queryset(selectors.service_queryset()))
        context = {**self.status_context(), "uptime": uptime_detail(found)}
        return Response(ServiceSerializer(found, many=True, context=context).data)


class ServiceDetailView(CatalogRead, APIView):
    """``PUT`` registers (or updates) the service from its manifest; ``GET`` reads it."""

    queryset = Service.objects.all()
    required_scopes = WRITE

    @api_operation(
        summary="Get a service",
        description="One service of the catalog by its slug, as in the list.",
        errors=[errors.ServiceNotFound],
        examples=[examples.service],
        responses={200: ServiceSerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        service = selectors.service_get(slug=slug)
        context = {**self.status_context(), "uptime": uptime_detail([service])}
        return Response(ServiceSerializer(service, context=context).data)

    @api_operation(
        summary="Register a service",
        description="Registers a service from its manifest (201), or updates it (200): what it is, who owns it, "
        "where its health check and API schema are, and what it depends on. Every Atrium process does this at "
        "start-up; a service belongs to the machine client that registered it first. The portal polls the "
        "health URL only if it is an address it may reach.",
        errors=[
            errors.InvalidSlug,
            errors.ServiceNotFound,
            errors.ServiceRegisteredByAnotherClient,
            errors.HealthURLRefused,
        ],
        examples=[examples.manifest, examples.service],
        request=ManifestSerializer,
        responses={200: ServiceSerializer, 201: ServiceSerializer},
    )
    def put(self, request: Request, slug: str) -> Response:
        if not re.fullmatch(SLUG_REGEX, slug):
            raise errors.InvalidSlug(
                f"{slug!r}: 1 to 50 characters, lower-case letters, digits and dashes, a letter first."
            )
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

    @api_operation(
        summary="List a service's instances",
        description="The processes that heartbeat for the service, gone ones included, the latest heartbeat first.",
        errors=[errors.ServiceNotFound],
        examples=[examples.instance],
        parameters=[SLUG],
        responses={200: InstanceSerializer(many=True)},
    )
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

    @api_operation(
        summary="List a service's health checks",
        description="The portal's single checks of the service's health URL, newest first, with HTTP status and "
        "latency; kept for a few days (older ones are counted by hour in `health/hours`).",
        errors=[errors.ServiceNotFound],
        examples=[examples.health_check],
        parameters=[SLUG],
        responses={200: HealthCheckSerializer(many=True)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        selectors.service_id_get(slug=kwargs["slug"])
        return self.list(request, *args, **kwargs)


class HealthHoursView(CatalogRead, APIView):
    """A service's health checks counted by hour over a window, from the hourly roll-ups and the single checks
    together (so a window spanning both has every hour complete)."""

    queryset = HealthHour.objects.all()

    @api_operation(
        summary="Count a service's health checks by hour",
        description="Checks per hour over a window (default: the last 24 hours): how many passed, warned or "
        "failed and their mean latency.",
        errors=[errors.ServiceNotFound],
        examples=[examples.health_hours],
        parameters=[SLUG, HealthWindowSerializer],
        responses={200: HealthHoursSerializer},
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


@extend_schema_view(
    get=api_operation(
        summary="List teams",
        description="Every team with its contact, who is on call, and the services it owns with their status.",
        examples=[examples.team],
    )
)
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

    @api_operation(
        summary="Get a team",
        description="One team by its slug, as in the list.",
        errors=[errors.TeamNotFound],
        examples=[examples.team],
        parameters=[TEAM_SLUG],
        responses={200: TeamSerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        team = selectors.team_get(slug=slug)
        return Response(TeamSerializer(team, context=self.status_context()).data)


class InstanceHeartbeatView(APIView):
    access_log_quiet = True  # every agent calls it every few seconds: successes are DEBUG lines
    queryset = Instance.objects.all()
    required_scopes = WRITE

    @api_operation(
        summary="Heartbeat an instance",
        description="A process of the service says it is alive (201 the first time, then 200); the answer says "
        "when to beat again. An instance that stops beating turns critical, then gone.",
        errors=[errors.ServiceNotFound],
        examples=[examples.heartbeat, examples.heartbeat_answer],
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

    @api_operation(
        summary="Report calls received",
        description="The service reports how many calls each machine client made to it since its last report: "
        "the observed edges of the dependency graph.",
        errors=[errors.ServiceNotFound],
        examples=[examples.calls, examples.calls_recorded],
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

    @api_operation(
        summary="Get the dependency graph",
        description="The services and resources as nodes, and who depends on whom as edges: declared in "
        "manifests, observed from reported calls, or both; an edge seen but not declared (or the reverse) is "
        "flagged as drift.",
        examples=[examples.graph],
        responses={
            200: inline_serializer(
                "CatalogGraph",
                {
                    "nodes": serializers.ListField(child=serializers.DictField()),
                    "edges": serializers.ListField(child=graph_edge()),
                },
            )
        },
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

    @api_operation(
        tags=V2,
        examples=[examples.service_group],
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

    @api_operation(
        tags=V2,
        summary="Read a service with its processes and status",
        description="One service by slug, as in the list. An unknown slug is `404 service_not_found`.",
        errors=[errors.ServiceNotFound],
        examples=[examples.service_group],
        parameters=[GROUP_SLUG],
        responses={200: ServiceGroupSerializer},
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

    @api_operation(
        tags=V2,
        examples=[examples.service_graph],
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
        },
    )
    def get(self, request: Request) -> Response:
        query = ResourcesSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(service_graph(resources=query.validated_data["resources"]).as_dict())
