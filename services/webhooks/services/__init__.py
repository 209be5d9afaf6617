"""The webhooks service's writes, each in its transaction with its audit event (docs/architecture.md, "Layers
inside an app"). Callers use this package's names (``from services.webhooks import services``):

* :mod:`.messages` — messages in: events relayed from payments and the ledger (``messages_ingest``), and
  ``messages_create`` (``POST /api/v1/messages``);
* :mod:`.endpoints` (api) — ``endpoint_create``, ``endpoint_update``, ``endpoint_delete``, ``endpoint_enable``,
  ``endpoint_disable``, ``endpoint_secret_read``, ``endpoint_secret_rotate``;
* :mod:`.sends` (api) — ``message_send`` (``POST /api/v1/messages``: ``messages_create`` with its refusals on
  record), ``message_resend``;
* :mod:`.recoveries` (api) — ``recovery_request``, ``recovery_step`` (the ``webhooks.recover`` task), ``recover_send``,
  ``recoveries_resume`` (beat: recoveries whose message was lost);
* :mod:`.refusals` (api) — refusals on record (a ``failure`` audit event after the rollback).
"""

from services.webhooks.services.endpoints import (
    endpoint_create,
    endpoint_delete,
    endpoint_disable,
    endpoint_enable,
    endpoint_secret_read,
    endpoint_secret_rotate,
    endpoint_update,
)
from services.webhooks.services.messages import (
    IngestResult,
    message_body,
    messages_create,
    messages_ingest,
)
from services.webhooks.services.recoveries import recover_send, recoveries_resume, recovery_request, recovery_step
from services.webhooks.services.refusals import refusal_record
from services.webhooks.services.rekey import RekeyResult, secrets_rekey
from services.webhooks.services.sends import message_resend, message_send

__all__ = [
    "IngestResult",
    "RekeyResult",
    "endpoint_create",
    "endpoint_delete",
    "endpoint_disable",
    "endpoint_enable",
    "endpoint_secret_read",
    "endpoint_secret_rotate",
    "endpoint_update",
    "message_body",
    "message_resend",
    "message_send",
    "messages_create",
    "messages_ingest",
    "recover_send",
    "recoveries_resume",
    "recovery_request",
    "recovery_step",
    "refusal_record",
    "secrets_rekey",
]
