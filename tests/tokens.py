"""Fixtures for any suite: scripted local HTTP servers, signing keys and a JWKS server (a pytest plugin)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from services.kit import auth
from services.kit.revocations import RevocationEntry, revocations_document
from tests.servers import LocalServer, Responder, Seen, json_reply


@pytest.fixture
def local_server() -> Iterator[Callable[[Responder], LocalServer]]:
    """Start real HTTP servers answering as scripted; all stopped after the test."""
    servers: list[LocalServer] = []

    def start(respond: Responder) -> LocalServer:
        server = LocalServer(respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class SigningKey:
    """An Ed25519 key that mints tokens the way the portal does."""

    private_key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)
    kid: str = field(default_factory=lambda: f"kid-{uuid.uuid4().hex[:12]}")

    @property
    def jwk(self) -> dict[str, Any]:
        public = OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def mint(self, *, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        from django.conf import settings

        now = int(time.time())
        payload = {
            "iss": settings.JWT_ISSUER,
            "aud": "ledger",
            "sub": "cli_test",
            "iat": now,
            "exp": now + 300,
            "scope": "ledger:read ledger:write",
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.private_key, algorithm="EdDSA", headers={"kid": self.kid, **(headers or {})})


class JWKSServer:
    """A real JWKS endpoint publishing ``keys``, and the revocation list next to it (as the portal serves them:
    ``revocations`` maps client ids to entries); counts its key set fetches."""

    path = "/.well-known/jwks.json"
    revocations_path = "/.well-known/atrium-revocations.json"

    def __init__(self, start: Callable[[Responder], LocalServer], keys: list[SigningKey]) -> None:
        self.keys = keys
        self.revocations: dict[str, RevocationEntry] = {}
        self.server = start(self._respond)
        self.url = self.server.url + self.path

    def _respond(self, seen: Seen) -> Any:
        if seen.path == self.revocations_path:
            return json_reply(200, revocations_document(self.revocations))
        if seen.path != self.path:
            return json_reply(404, {})
        return json_reply(200, {"keys": [key.jwk for key in self.keys]})

    @property
    def fetches(self) -> int:
        return len(self.server.calls(self.path))


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def jwks_server(
    local_server: Callable[[Responder], LocalServer], signing_key: SigningKey, settings: Any
) -> Iterator[JWKSServer]:
    """A live JWKS server with ``signing_key``; the ledger settings point at it, with empty caches."""
    server = JWKSServer(local_server, [signing_key])
    settings.JWT_JWKS_URL = server.url
    auth._caches.clear()
    auth.verified_cache().clear()
    yield server
    auth._caches.clear()
    auth.verified_cache().clear()
