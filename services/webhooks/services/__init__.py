"""Webhooks writes, one module per subject (``from services.webhooks import services; services.endpoint_create``):

* :mod:`.endpoints` (api) — ``endpoint_create``, ``endpoint_update``, ``endpoint_delete``, ``endpoint_enable``,
  ``endpoint_disable``, ``endpoint_secret_read``, ``endpoint_secret_rotate``;
* :mod:`.sends` (api) — ``message_send`` (POST /messages), ``message_resend``;
* :mod:`.recoveries` (api) — ``recovery_request``, ``recovery_step`` (the ``webhooks.recover`` task), ``recover_send``;
* :mod:`.refusals` — refusals on record (a ``failure`` audit event after the rollback).
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
from services.webhooks.services.recoveries import recover_send, recovery_request, recovery_step
from services.webhooks.services.refusals import refusal_record
from services.webhooks.services.sends import message_resend, message_send

__all__ = [
    "endpoint_create",
    "endpoint_delete",
    "endpoint_disable",
    "endpoint_enable",
    "endpoint_secret_read",
    "endpoint_secret_rotate",
    "endpoint_update",
    "message_resend",
    "message_send",
    "recover_send",
    "recovery_request",
    "recovery_step",
    "refusal_record",
]
