"""``/api/v1/trace/...``"""

from django.urls import path

from portal.trace.api.views import TraceView

urlpatterns = [
    path("<str:trace_id>", TraceView.as_view(), name="trace"),
]
