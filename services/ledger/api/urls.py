from django.urls import path
from rest_framework.routers import SimpleRouter

from services.kit.views import WhoAmIView
from services.ledger.api.views import (
    AccountViewSet,
    TransactionBatchView,
    TransactionSettleBatchView,
    TransactionViewSet,
)

router = SimpleRouter(trailing_slash=False)  # the URL rule: services/kit/canonical_urls.py
router.register("accounts", AccountViewSet, basename="account")
router.register("transactions", TransactionViewSet, basename="transaction")

urlpatterns = [
    path("whoami", WhoAmIView.as_view(), name="whoami"),
    path("transactions/batch", TransactionBatchView.as_view(), name="transaction-batch"),
    path("transactions/batch/settle", TransactionSettleBatchView.as_view(), name="transaction-batch-settle"),
    *router.urls,
]
