from django.urls import path

from services.kit.views import WhoAmIView

urlpatterns = [
    path("whoami", WhoAmIView.as_view(), name="whoami"),
]
