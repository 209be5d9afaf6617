from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from services.kit.canonical_urls import id_segment
from services.kit.views import WhoAmIView
from services.webhooks.api.views import (
    AttemptViewSet,
    EndpointSecretView,
    EndpointViewSet,
    EventTypeViewSet,
    MessageViewSet,
    RecoveryView,
)

router = SimpleRouter(trailing_slash=False)  # the URL rule: services/kit/canonical_urls.py
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("event-types", EventTypeViewSet, basename="event-type")
router.register("messages", MessageViewSet, basename="message")
router.register("attempts", AttemptViewSet, basename="attempt")

_ID = id_segment()

urlpatterns = [
    path("whoami", WhoAmIView.as_view(), name="whoami"),
    re_path(rf"^endpoints/(?P<pk>{_ID})/secret$", EndpointSecretView.as_view(), name="endpoint-secret"),
    re_path(rf"^recoveries/(?P<pk>{_ID})$", RecoveryView.as_view(), name="recovery-detail"),
    *router.urls,
]
