from django.urls import path

from portal.audit.api import views

urlpatterns = [
    path("events", views.AuditEventListView.as_view(), name="audit-event-list"),
    path("events:ingest", views.AuditIngestView.as_view(), name="audit-event-ingest"),
    path("schema", views.AuditSchemaView.as_view(), name="audit-schema"),
    path("events/<str:event_id>", views.AuditEventDetailView.as_view(), name="audit-event-detail"),
    path("events/<str:event_id>/proof", views.AuditEventProofView.as_view(), name="audit-event-proof"),
    path("heads", views.AuditHeadListView.as_view(), name="audit-head-list"),
    path("public-key", views.AuditPublicKeyView.as_view(), name="audit-public-key"),
    path("public-keys", views.AuditPublicKeysView.as_view(), name="audit-public-keys"),
    path("export", views.AuditExportView.as_view(), name="audit-export"),
]
