"""``/api/v1/catalog/...``"""

from django.urls import path

from portal.catalog.api.views import (
    CallsReportView,
    GraphView,
    HealthCheckListView,
    HealthHoursView,
    InstanceHeartbeatView,
    InstanceListView,
    ServiceDetailView,
    ServiceListView,
    TeamDetailView,
    TeamListView,
)

urlpatterns = [
    path("graph", GraphView.as_view(), name="catalog-graph"),
    path("services", ServiceListView.as_view(), name="catalog-services"),
    path("services/<str:slug>", ServiceDetailView.as_view(), name="catalog-service"),
    path("services/<str:slug>/instances", InstanceListView.as_view(), name="catalog-instances"),
    path(
        "services/<str:slug>/instances/<str:instance>/heartbeat",
        InstanceHeartbeatView.as_view(),
        name="catalog-instance-heartbeat",
    ),
    path("services/<str:slug>/calls", CallsReportView.as_view(), name="catalog-calls"),
    path("services/<str:slug>/health", HealthCheckListView.as_view(), name="catalog-health"),
    path("services/<str:slug>/health/hours", HealthHoursView.as_view(), name="catalog-health-hours"),
    path("teams", TeamListView.as_view(), name="catalog-teams"),
    path("teams/<str:slug>", TeamDetailView.as_view(), name="catalog-team"),
]
