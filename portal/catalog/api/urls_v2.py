"""``/api/v2/catalog/...``: services (processes grouped by the service they are part of) and the graph between
them. ``/api/v1/catalog/...`` is unchanged: its "services" are the catalog's entries, one per process."""

from django.urls import path

from portal.catalog.api.views import ServiceGraphView, ServiceGroupDetailView, ServiceGroupListView

urlpatterns = [
    path("graph", ServiceGraphView.as_view(), name="catalog-v2-graph"),
    path("services", ServiceGroupListView.as_view(), name="catalog-v2-services"),
    path("services/<str:slug>", ServiceGroupDetailView.as_view(), name="catalog-v2-service"),
]
