from django.contrib import admin
from django.urls import include, path

from services.kit.urls import kit_urlpatterns

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("services.payments.api.urls")),
    *kit_urlpatterns(),
]

admin.site.site_header = "Atrium payments"

handler400 = "services.kit.errors.handler400"
handler403 = "services.kit.errors.handler403"
handler404 = "services.kit.errors.handler404"
handler500 = "services.kit.errors.handler500"
