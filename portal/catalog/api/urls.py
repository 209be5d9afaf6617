"""``/api/v1/catalog/...``"""

from django.urls import path

from portal.catalog.api.views import (
    CallsReportView,
    GraphView,
    InstanceHeartbeatView,
    ServiceDetailView,
    ServiceListView,
)

urlpatterns = [
    path("graph", GraphView.as_view(), name="catalog-graph"),
    path("services", ServiceListView.as_view(), name="catalog-services"),
    path("services/<str:slug>", ServiceDetailView.as_view(), name="catalog-service"),
    path(
        "services/<str:slug>/instances/<str:instance>/heartbeat",
        InstanceHeartbeatView.as_view(),
        name="catalog-instance-heartbeat",
    ),
    path("services/<str:slug>/calls", CallsReportView.as_view(), name="catalog-calls"),
]
