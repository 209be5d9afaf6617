"""The trace page in the admin: ``/admin/trace/?q=<id>`` (included before ``admin.site.urls``)."""

from django.urls import path

from portal.trace import views

app_name = "trace_pages"

urlpatterns = [
    path("", views.trace, name="trace"),
]
