from django.urls import path
from rest_framework.routers import SimpleRouter

from services.kit.views import WhoAmIView

router = SimpleRouter(trailing_slash=False)  # the URL rule: services/kit/canonical_urls.py

urlpatterns = [
    path("whoami", WhoAmIView.as_view(), name="whoami"),
    *router.urls,
]
