"""The portal's home, ``/admin/`` (an admin view for every signed-in staff user; what each tile shows depends on
the user's role: :mod:`portal.home.pages`), kept up to date without a reload like the catalog's pages
(:mod:`portal.ui.live`); the admin's own model list stays below the tiles (not refreshed)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from portal.home.pages import home_page
from portal.ui.live import render_live

TITLE = "Home"


def _home(request: HttpRequest) -> HttpResponse:
    return render_live(
        request,
        templates="admin/home",
        page="home",
        title=TITLE,
        context={"home": home_page(user=request.user)},
        crumbs=[],
        nav=[],
        page_context={"app_list": admin.site.get_app_list(request)},
    )


home = admin.site.admin_view(_home)
