"""Domain events as the payments service writes them to its outbox, for the webhooks tests and bench (no Django
needed): ``payment_event`` builds one, ``outbox_write`` writes many to a service database's outbox (topic
``events``) in one statement, so that its outbox relay publishes them to ``webhooks.ingest``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg

from services.kit.ids import id_new


def payment_event(event_type: str, *, source: str, destination: str, payment_id: str | None = None) -> dict[str, Any]:
    """A ``payment.*`` domain event as the payments service writes it to its outbox (topic ``events``)."""
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    payment_id = payment_id or id_new("pay")
    status = event_type.removeprefix("payment.")
    return {
        "type": event_type,
        "occurred_at": now,
        "data": {
            "id": payment_id,
            "status": status,
            "amount": 1234,
            "currency": "EUR",
            "source_account": source,
            "destination_account": destination,
            "description": "",
            "metadata": {},
            "ledger_transaction": None,
            "failure_code": "",
            "failure_message": "",
            "status_history": [{"status": status, "at": now}],
            "created_at": now,
            "updated_at": now,
        },
        "channels": [source, destination],
        "request_id": id_new("req"),
    }


_INSERT = (
    "INSERT INTO kit_outbox_event (id, topic, payload, created_at, attempts, last_error) "
    "SELECT id, 'events', payload::jsonb, now(), 0, '' FROM unnest(%s::text[], %s::text[]) AS v(id, payload)"
)


def outbox_write(conn: psycopg.Connection[Any], events: list[dict[str, Any]]) -> list[str]:
    """Write ``events`` to a service's outbox (topic ``events``) in one statement on ``conn`` (autocommit: one
    transaction); return their event ids. The relay (polling) publishes them."""
    ids = [id_new("evt") for _ in events]
    conn.execute(_INSERT, [ids, [json.dumps(e, separators=(",", ":")) for e in events]])
    return ids
