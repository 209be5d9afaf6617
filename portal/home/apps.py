from __future__ import annotations

from django.apps import AppConfig


class HomeConfig(AppConfig):
    """The portal's home: a dashboard of the business at ``/admin/``, no tables of its own (it reads the catalog's,
    the job dashboard's and the audit trail's selectors, and the payments service's API)."""

    name = "portal.home"
    label = "home"
    verbose_name = "Home"
