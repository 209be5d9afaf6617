"""The catalog pages, inside the admin: ``/admin/catalog/overview/``, ``/admin/catalog/services/<slug>/``,
``/admin/catalog/graph/``, ``/admin/catalog/teams/`` (included before ``admin.site.urls``, whose own catalog
pages are ``/admin/catalog/`` and ``/admin/catalog/<model>/...``)."""

from django.urls import path

from portal.catalog import views

app_name = "catalog_pages"

urlpatterns = [
    path("overview/", views.overview, name="overview"),
    path("services/<str:slug>/", views.service, name="service"),
    path("graph/", views.dependency_graph, name="graph"),
    path("teams/", views.teams, name="teams"),
]
