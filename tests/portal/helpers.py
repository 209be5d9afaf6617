"""Assertions and constants shared by the portal tests."""

from __future__ import annotations

import json
from typing import Any

import redis

from portal.identity.keys import jwks, signing_key
from services.kit.auth import jwks_cache

TOKEN_URL = "/api/v1/auth/token"
CLIENTS_URL = "/api/v1/identity/clients"
PORTAL_QUEUE = "portal"


def queued_messages(conn: redis.Redis, queue: str = PORTAL_QUEUE) -> list[dict[str, Any]]:
    """The kombu envelopes waiting in ``queue`` (the Redis transport LPUSHes JSON)."""
    return [json.loads(raw) for raw in conn.lrange(queue, 0, -1)]


def clear_key_caches() -> None:
    """Forget the signing key, the published key set and the portal's own verifying cache of it."""
    signing_key.cache_clear()
    jwks.cache_clear()
    jwks_cache().clear()
