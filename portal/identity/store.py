"""The Redis connection identity keeps shared state in: published revocations, token-endpoint lockouts.

Short timeouts: every caller has an answer for Redis being away (revocations fall back to the portal's endpoint,
the token endpoint stops throttling and says so in the log), so none may hang on it.
"""

from __future__ import annotations

import threading

import redis
from django.conf import settings

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def identity_redis() -> redis.Redis:
    """This process's client for ``REDIS_URL`` (redis-py's pool reconnects after a fork by itself)."""
    url = settings.REDIS_URL
    if not url:
        raise redis.ConnectionError("REDIS_URL is not set")
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        return client
