"""The home, ``/admin/`` (included before ``admin.site.urls``, whose index it replaces; ``admin:index`` still names
``/admin/``, so every "Home" crumb lands here)."""

from django.urls import path

from portal.home import views

app_name = "home"

urlpatterns = [
    path("", views.home, name="home"),
]
