from services.kit.urls import service_urlpatterns

urlpatterns = service_urlpatterns(api="services.webhooks.api.urls")

# Django's error views (paths outside DRF): the kit's problem+json ones, the same in every root URLconf.
from services.kit.errors import handler400, handler403, handler404, handler500  # noqa: E402, F401
