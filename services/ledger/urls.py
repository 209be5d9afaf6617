from django.contrib import admin

from services.kit.urls import service_urlpatterns

urlpatterns = service_urlpatterns(api="services.ledger.api.urls")

admin.site.site_header = "Atrium ledger"

handler400 = "services.kit.errors.handler400"
handler403 = "services.kit.errors.handler403"
handler404 = "services.kit.errors.handler404"
handler500 = "services.kit.errors.handler500"
