"""The webhooks service's writes, each in its transaction with its audit event (docs/architecture.md, "Layers
inside an app"): messages in (``messages``: events relayed from payments and the ledger, and ``POST
/api/v1/messages``); endpoints, resends and recoveries (the API's modules). Callers use this package's names."""

from services.webhooks.services.messages import (
    IngestResult,
    message_body,
    messages_create,
    messages_ingest,
)

__all__ = [
    "IngestResult",
    "message_body",
    "messages_create",
    "messages_ingest",
]

# ----------------------------------------------------------------------------------------------------------------
# THIN STAND-INS (the admin helper's block): the admin's actions and make up's demo subscription call these writes
# before the api helper's land. Delete this block and services/standins.py when the api's endpoint, resend and
# recovery services are exported here under the same names.
# ----------------------------------------------------------------------------------------------------------------
from services.webhooks.services.standins import (
    endpoint_create,
    endpoint_disable,
    endpoint_enable,
    endpoint_update,
    message_resend,
    recovery_request,
)

__all__ += [
    "endpoint_create",
    "endpoint_disable",
    "endpoint_enable",
    "endpoint_update",
    "message_resend",
    "recovery_request",
]
