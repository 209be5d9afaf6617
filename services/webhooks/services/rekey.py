"""Rotation of the key that encrypts endpoint secrets at rest (``WEBHOOKS_SECRET_KEYS``): put the new key first,
run ``manage.py webhooks_rekey`` (this), then drop the old key. Safe to run again, and while the service runs: each
batch of endpoints is re-encrypted under row locks in its own transaction, and every key of the setting still
decrypts what is not done yet."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from services.kit.audit import audit_record
from services.kit.logs import get_logger
from services.webhooks import secrets
from services.webhooks.models import Endpoint

log = get_logger(__name__)

_FIELDS = ("secret", "previous_secret", "signing_key")


@dataclass
class RekeyResult:
    endpoints: int = 0  # re-encrypted under the first key
    unreadable: list[str] = field(default_factory=list)  # endpoints none of the keys opens (left as they were)


def secrets_rekey(*, batch: int = 500) -> RekeyResult:
    """Re-encrypt every endpoint's secrets under the first of ``WEBHOOKS_SECRET_KEYS``; audited once
    (``webhooks.endpoint.secrets_rekeyed``, with the counts)."""
    result = RekeyResult()
    after = ""
    while True:
        with transaction.atomic():
            endpoints = list(
                Endpoint.objects.select_for_update().filter(id__gt=after).order_by("id").only("id", *_FIELDS)[:batch]
            )
            if not endpoints:
                break
            after = endpoints[-1].id
            changed = []
            for endpoint in endpoints:
                try:
                    for name in _FIELDS:
                        setattr(endpoint, name, secrets.reencrypt(getattr(endpoint, name)))
                except secrets.InvalidToken:
                    result.unreadable.append(endpoint.id)
                    continue
                changed.append(endpoint)
            Endpoint.objects.bulk_update(changed, list(_FIELDS))
            result.endpoints += len(changed)
    with transaction.atomic():
        audit_record(
            "webhooks.endpoint.secrets_rekeyed",
            outcome="failure" if result.unreadable else "success",
            object_type="endpoint",
            metadata={"endpoints": result.endpoints, "unreadable": result.unreadable[:100]},
        )
    if result.unreadable:
        log.error("webhooks.rekey_unreadable", count=len(result.unreadable), endpoints=result.unreadable[:20])
    return result
