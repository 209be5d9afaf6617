"""JWT authentication for every service: portal-issued tokens verified locally.

A service never calls the portal per request: it verifies the token's EdDSA/RS256
signature against the portal's JSON Web Key Set, fetched once and cached
(``JWT_JWKS_CACHE_SECONDS``), refetched early when a token names an unknown ``kid``
(key rotation), and keeps serving from the cached set if the portal is briefly away.

A client sends the same token with every request until it expires, so a verified
token's claims are kept in a small bounded cache (``JWT_VERIFIED_CACHE_SIZE``
entries, each for at most ``JWT_VERIFIED_CACHE_SECONDS``): a hit skips parsing and
the signature check but still checks expiry and revocation, and is dropped as soon as
the signing key is no longer in the key set.

Every token is also checked against the revoked clients and rotated secrets the portal
publishes (``services/kit/revocations.py``): an in-memory lookup, refreshed by a
background thread, so a revocation reaches every service within seconds without a call
per request. A token names exactly one audience (``aud`` a string): a list, even of one,
is refused.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from services.kit.catalog import call_count
from services.kit.logs import get_logger
from services.kit.revocations import revocation_watcher

log = get_logger(__name__)

ALGORITHMS = ["EdDSA", "RS256"]
# An unknown kid triggers a refetch at most this often, so junk tokens cannot
# turn a service into a JWKS-fetching amplifier against the portal.
UNKNOWN_KID_REFETCH_SECONDS = 5.0


class JWKSUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "The token signing keys could not be fetched; try again shortly."
    default_code = "jwks_unavailable"


@dataclass(frozen=True)
class ClientPrincipal:
    """The machine client a verified token speaks for (DRF's ``request.user``)."""

    client_id: str
    scopes: frozenset[str]
    audience: str
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    @property
    def pk(self) -> str:
        return self.client_id

    def __str__(self) -> str:
        return self.client_id


class JWKSCache:
    """A thread-safe, time-bounded cache of one JWKS URL's keys, by ``kid``."""

    def __init__(
        self, url: str, ttl: float, timeout: float = 2.0, provider: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self.url = url
        self.provider = provider
        self.ttl = ttl
        self.timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._last_attempt = 0.0
        self._lock = threading.Lock()

    def _fetch(self) -> None:
        self._last_attempt = time.monotonic()
        if self.provider is not None:
            document = self.provider()
        else:
            response = httpx.get(self.url, timeout=self.timeout, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("the key set is not a JSON object with a 'keys' list")
        keys: dict[str, jwt.PyJWK] = {}
        for data in document["keys"]:
            if not isinstance(data, dict) or data.get("use", "sig") != "sig" or "kid" not in data:
                continue
            try:
                keys[data["kid"]] = jwt.PyJWK(data)
            except jwt.PyJWTError as exc:
                log.warning("jwks.key_skipped", kid=data.get("kid"), error=str(exc))
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info("jwks.fetched", url=self.url, kids=sorted(keys))

    def get(self, kid: str) -> jwt.PyJWK | None:
        """Return the key for ``kid``, fetching or refetching the set when needed."""
        with self._lock:
            now = time.monotonic()
            expired = now - self._fetched_at > self.ttl
            unknown = kid not in self._keys
            may_refetch = now - self._last_attempt > UNKNOWN_KID_REFETCH_SECONDS
            # After a failed fetch, stale keys are served until the refetch interval has passed.
            backing_off = bool(self._keys) and self._last_attempt > self._fetched_at and not may_refetch
            if (expired and not backing_off) or (unknown and may_refetch):
                try:
                    self._fetch()
                except (httpx.HTTPError, ValueError) as exc:
                    log.warning("jwks.fetch_failed", url=self.url, error=str(exc))
                    if not self._keys:
                        raise JWKSUnavailable() from exc
                    # Serve from the stale set; try again after the refetch interval.
            return self._keys.get(kid)

    def clear(self) -> None:
        with self._lock:
            self._keys = {}
            self._fetched_at = 0.0
            self._last_attempt = 0.0


_caches: dict[str, JWKSCache] = {}
_caches_lock = threading.Lock()


def jwks_cache() -> JWKSCache:
    """The process-wide JWKS cache for ``settings.JWT_JWKS_URL``.

    The identity provider itself sets ``JWT_JWKS_PROVIDER`` (a dotted path to a
    function returning the key set) and so verifies its own tokens without HTTP.
    """
    provider_path = getattr(settings, "JWT_JWKS_PROVIDER", "")
    url = settings.JWT_JWKS_URL
    cache_key = provider_path or url
    with _caches_lock:
        cache = _caches.get(cache_key)
        if cache is None:
            provider = import_string(provider_path) if provider_path else None
            cache = _caches[cache_key] = JWKSCache(url, ttl=settings.JWT_JWKS_CACHE_SECONDS, provider=provider)
        return cache


_wall_clock = time.time  # module-level so tests can move the clocks of this module alone
_monotonic = time.monotonic


@dataclass(frozen=True)
class _Verified:
    claims: dict[str, Any]
    kid: str
    key: jwt.PyJWK
    expires: float  # the token's exp + leeway (UNIX time)
    stored: float  # time.monotonic() when verified


class VerifiedTokenCache:
    """Claims of recently verified tokens, by (audience, token): bounded, least recently used out first."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[tuple[str, str], _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, audience: str, token: str) -> _Verified | None:
        if self.size <= 0:
            return None
        with self._lock:
            entry = self._entries.get((audience, token))
            if entry is None:
                return None
            if _monotonic() - entry.stored > self.ttl:
                del self._entries[(audience, token)]
                return None
            self._entries.move_to_end((audience, token))
            return entry

    def put(self, audience: str, token: str, entry: _Verified) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._entries[(audience, token)] = entry
            self._entries.move_to_end((audience, token))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def discard(self, audience: str, token: str) -> None:
        with self._lock:
            self._entries.pop((audience, token), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_verified: VerifiedTokenCache | None = None


def verified_cache() -> VerifiedTokenCache:
    """The process-wide cache of verified tokens (sized by ``JWT_VERIFIED_CACHE_SIZE``, 0 disables it)."""
    global _verified
    with _caches_lock:
        if _verified is None:
            _verified = VerifiedTokenCache(
                size=getattr(settings, "JWT_VERIFIED_CACHE_SIZE", 1024),
                ttl=getattr(settings, "JWT_VERIFIED_CACHE_SECONDS", 60),
            )
        return _verified


def token_verify(token: str, *, audience: str | None = None) -> dict[str, Any]:
    """Verify a portal-issued JWT (signature, expiry, issuer, audience) and return its claims.

    Raises ``AuthenticationFailed`` (401) for a bad/expired/foreign token and
    ``PermissionDenied`` (403) for a valid token minted for another audience.
    """
    audience = audience or settings.JWT_AUDIENCE
    cache = verified_cache()
    hit = cache.get(audience, token)
    if hit is not None:
        if _wall_clock() > hit.expires:
            cache.discard(audience, token)
            raise exceptions.AuthenticationFailed("Token has expired.", code="token_expired")
        if jwks_cache().get(hit.kid) is hit.key:  # the signing key is still published (and unchanged)
            _revocation_check(hit.claims, audience, token)
            return dict(hit.claims)
        cache.discard(audience, token)
    claims, kid, key = _token_decode(token, audience)
    _revocation_check(claims, audience, token)
    expires = float(claims["exp"]) + settings.JWT_LEEWAY_SECONDS
    cache.put(audience, token, _Verified(dict(claims), kid, key, expires, _monotonic()))
    return claims


def _revocation_check(claims: dict[str, Any], audience: str, token: str) -> None:
    """Refuse a token whose client the portal revoked, or minted with a secret rotated out (in memory)."""
    reason = revocation_watcher().refusal(claims)
    if reason is not None:
        verified_cache().discard(audience, token)
        what = "was revoked" if reason == "revoked" else "obtained it with a secret that was rotated out"
        raise exceptions.AuthenticationFailed(f"Token no longer valid: its client {what}.", code="token_revoked")


def _token_decode(token: str, audience: str) -> tuple[dict[str, Any], str, jwt.PyJWK]:
    """Full verification: the claims, and the key id and key that verified them."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise exceptions.AuthenticationFailed("Malformed bearer token.", code="invalid_token") from exc
    kid = header.get("kid")
    if not isinstance(kid, str) or header.get("alg") not in ALGORITHMS:
        raise exceptions.AuthenticationFailed("Token has no usable key id or algorithm.", code="invalid_token")
    key = jwks_cache().get(kid)
    if key is None:
        raise exceptions.AuthenticationFailed("Token signed by an unknown key.", code="invalid_token")
    try:
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=[key.algorithm_name] if key.algorithm_name in ALGORITHMS else ALGORITHMS,
            issuer=settings.JWT_ISSUER,
            leeway=settings.JWT_LEEWAY_SECONDS,
            # The audience is checked below: PyJWT accepts a list that contains ours, we accept exactly one.
            options={"require": ["exp", "iat", "iss", "aud", "sub"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise exceptions.AuthenticationFailed("Token has expired.", code="token_expired") from exc
    except jwt.PyJWTError as exc:
        raise exceptions.AuthenticationFailed(f"Invalid token: {exc}", code="invalid_token") from exc
    if not isinstance(claims.get("aud"), str):
        # A token valid for several services would let one of them replay it against the others.
        raise exceptions.AuthenticationFailed("A token must name exactly one audience.", code="invalid_token")
    if claims["aud"] != audience:
        raise exceptions.PermissionDenied(f"Token is not valid for the '{audience}' service.", code="invalid_audience")
    return claims, kid, key


class JWTAuthentication(BaseAuthentication):
    """``Authorization: Bearer <jwt>`` issued by the portal for this service's audience."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[ClientPrincipal, dict[str, Any]] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Authorization header must be 'Bearer <token>'.", code="invalid_token"
            )
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Malformed bearer token.", code="invalid_token") from exc
        claims = token_verify(token)
        call_count(str(claims["sub"]))  # who called this service: the catalog's observed dependencies
        principal = ClientPrincipal(
            client_id=str(claims["sub"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            audience=settings.JWT_AUDIENCE,
            claims=claims,
        )
        return principal, claims

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{settings.JWT_AUDIENCE}"'


def required_scopes(view: Any, method: str) -> set[str]:
    """The scopes ``view`` requires for ``method``.

    A view may declare ``required_scopes = {"GET": {"ledger:read"}, "POST": {...}}``;
    otherwise reads need ``<audience>:read`` and writes ``<audience>:write``.
    """
    declared = getattr(view, "required_scopes", None)
    if declared is not None:
        value = declared.get(method, declared.get("*", set()))
        return {value} if isinstance(value, str) else set(value)
    action = "read" if method in SAFE_METHODS else "write"
    return {f"{settings.JWT_AUDIENCE}:{action}"}


class HasScope(BasePermission):
    """Machine clients need the view's scopes; anything else is refused (401 if anonymous)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not isinstance(user, ClientPrincipal):
            return False
        missing = required_scopes(view, request.method) - user.scopes
        if missing:
            raise exceptions.PermissionDenied(
                f"Token lacks the scope(s): {', '.join(sorted(missing))}.", code="insufficient_scope"
            )
        return True
