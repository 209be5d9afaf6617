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
