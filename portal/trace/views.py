"""The trace page: ``/admin/trace/?q=<id>``, an admin view for every portal role (``jobs.view_job``, which each
holds), built on the same selector as the API and audited the same way (``trace.viewed``, ``via: page``).

An invalid id answers 400 and an unknown one 404, each with the page and its search box (never an error page).
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from portal.trace import pages, services
from portal.trace.errors import TraceIdInvalid, TraceNotFound
from portal.trace.selectors import trace_viewer
from portal.ui.live import admin_page

VIEW_PERMISSION = "jobs.view_job"  # every portal role holds it; what a role sees is trace_viewer's


@admin_page(VIEW_PERMISSION)
def trace(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "")
    viewer = trace_viewer(request.user)
    context: dict[str, object] = {
        "q": q.strip()[:300],
        "trace_search_q": q.strip()[:200],
        "audit_visible": viewer.audit,
        "error": "",
        "found": None,
    }
    status = 200
    if q.strip():
        try:
            found = services.trace_lookup(value=q, viewer=viewer, via="page")
        except TraceIdInvalid as exc:
            context["error"], status = exc.detail, 400
        except TraceNotFound as exc:
            context["error"], status = exc.detail, 404
        else:
            context["found"] = pages.trace_page(found)
    title = f"Trace of {context['q']}" if q.strip() and not context["error"] else "Trace"
    return TemplateResponse(
        request,
        "admin/trace/trace.html",
        {**admin.site.each_context(request), "is_nav_sidebar_enabled": False, "title": title, **context},
        status=status,
    )
