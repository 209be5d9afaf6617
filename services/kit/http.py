"""The one HTTP client for calls between Atrium processes.

Every call carries the current ``X-Request-ID`` and, when given an audience, a
bearer token for it obtained from the portal with this process's own machine
credentials (client-credentials grant, cached until shortly before expiry).
Calls have timeouts, retry with exponential backoff and full jitter (only when
a retry cannot duplicate work: idempotent methods, or an ``Idempotency-Key``),
and go through a per-upstream circuit breaker.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import httpx
from django.conf import settings

from services.kit.context import REQUEST_ID_HEADER, request_id_var
from services.kit.errors import DomainError
from services.kit.logs import get_logger

log = get_logger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
UPSTREAM_UP_ERRORS = frozenset({500, 501})  # server errors of a request, not signs the upstream is away


class UpstreamUnavailable(DomainError):
    """The upstream could not be reached (after retries) or its circuit is open."""

    code = "upstream_unavailable"
    status = 503
    title = "Upstream service unavailable"


class CircuitOpen(UpstreamUnavailable):
    code = "circuit_open"
    title = "Upstream circuit open"


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures → half-open after ``reset_timeout``.

    Half-open lets one trial call through: success closes the circuit, failure reopens it.
    """

    def __init__(self, name: str, *, failure_threshold: int = 5, reset_timeout: float = 30.0) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self._trial_in_flight = False
        self._lock = threading.Lock()

    def before_call(self) -> None:
        with self._lock:
            if self.state == "open":
                if time.monotonic() - self.opened_at < self.reset_timeout:
                    raise CircuitOpen(f"Calls to {self.name} are suspended after repeated failures.")
                self.state = "half_open"
                self._trial_in_flight = False
            if self.state == "half_open":
                if self._trial_in_flight:
                    raise CircuitOpen(f"A trial call to {self.name} is already in flight.")
                self._trial_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            if self.state != "closed":
                log.info("circuit.closed", upstream=self.name)
            self.state = "closed"
            self.failures = 0
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self.failures += 1
            self._trial_in_flight = False
            if self.state == "half_open" or self.failures >= self.failure_threshold:
                if self.state != "open":
                    log.warning("circuit.opened", upstream=self.name, failures=self.failures)
                self.state = "open"
                self.opened_at = time.monotonic()


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def circuit_breaker_for(name: str, **kwargs: Any) -> CircuitBreaker:
    """The process-wide breaker for an upstream (shared by every client of it)."""
    with _breakers_lock:
        breaker = _breakers.get(name)
        if breaker is None:
            breaker = _breakers[name] = CircuitBreaker(name, **kwargs)
        return breaker


class ClientCredentials:
    """Fetches and caches access tokens from the portal's token endpoint, per audience."""

    RENEW_AFTER_REFUSAL = 10.0  # seconds: a refused token younger than this is not renewed (see invalidate)

    def __init__(self, *, token_url: str, client_id: str, client_secret: str, timeout: float = 5.0) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout = timeout
        self._tokens: dict[str, tuple[str, float, float]] = {}  # audience -> (token, renew at, fetched at)
        self._lock = threading.Lock()

    def token_for(self, audience: str) -> str:
        with self._lock:
            cached = self._tokens.get(audience)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            headers = {}
            request_id = request_id_var.get()
            if request_id:
                headers[REQUEST_ID_HEADER] = request_id
            try:
                response = httpx.post(
                    self.token_url,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.client_id,
                        "client_secret": self.client_secret,
                        "audience": audience,
                    },
                    headers=headers,
                    timeout=self.timeout,
                )
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(f"Token endpoint unreachable: {exc}") from exc
            if response.status_code != 200:
                raise UpstreamUnavailable(
                    f"Token endpoint refused credentials ({response.status_code}).", code="token_unavailable"
                )
            body = response.json()
            # Renew a little before expiry so a token never expires in flight.
            lifetime = max(int(body.get("expires_in", 60)) - 30, 5)
            now = time.monotonic()
            self._tokens[audience] = (body["access_token"], now + lifetime, now)
            return body["access_token"]

    def invalidate(self, audience: str, token: str) -> bool:
        """An upstream answered 401 to ``token`` (revoked, or signed with a key the portal no longer publishes):
        forget it, so the next :meth:`token_for` fetches a new one, and return True (worth sending again). A token
        fetched less than ``RENEW_AFTER_REFUSAL`` seconds ago is kept and False returned: a new one would be
        refused the same way (a wrong audience, an upstream that trusts another portal), and every call would
        cost a token request. A newer token another thread fetched meanwhile is kept, and True returned."""
        with self._lock:
            cached = self._tokens.get(audience)
            if cached is None or cached[0] != token:
                return True
            if time.monotonic() - cached[2] < self.RENEW_AFTER_REFUSAL:
                return False
            del self._tokens[audience]
            return True


def default_credentials() -> ClientCredentials | None:
    """This process's machine credentials from settings (``ATRIUM_CLIENT_ID`` / ``_SECRET`` / ``_TOKEN_URL``)."""
    client_id, secret, token_url = settings.ATRIUM_CLIENT_ID, settings.ATRIUM_CLIENT_SECRET, settings.ATRIUM_TOKEN_URL
    if not (client_id and secret and token_url):
        return None
    return ClientCredentials(token_url=token_url, client_id=client_id, client_secret=secret)


class ServiceClient:
    """JSON over HTTP to one upstream, with timeouts, retries, backoff, jitter and a circuit breaker."""

    def __init__(
        self,
        *,
        base_url: str,
        audience: str | None = None,
        credentials: ClientCredentials | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        retries: int = 3,
        backoff: float = 0.2,
        backoff_max: float = 5.0,
        breaker: CircuitBreaker | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.audience = audience
        self.credentials = credentials
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.breaker = breaker or circuit_breaker_for(self.base_url)
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            headers={"Accept": "application/json"},
        )

    def close(self) -> None:
        self._client.close()

    def _sleep_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        delay = random.uniform(0, min(self.backoff_max, self.backoff * (2**attempt)))  # noqa: S311  (jitter, not crypto)
        if response is not None and response.headers.get("Retry-After", "").isdigit():
            delay = min(self.backoff_max, float(response.headers["Retry-After"]))
        time.sleep(delay)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send a request; return the final response (any status) or raise ``UpstreamUnavailable``."""
        method = method.upper()
        send_headers = dict(headers or {})
        request_id = request_id_var.get()
        if request_id:
            send_headers[REQUEST_ID_HEADER] = request_id
        if idempotency_key:
            send_headers["Idempotency-Key"] = idempotency_key
        retryable = method in IDEMPOTENT_METHODS or idempotency_key is not None
        attempts = self.retries + 1 if retryable else 1
        last_error: Exception | None = None
        for attempt in range(attempts):
            response: httpx.Response | None = None
            try:
                response = self._send(method, path, json=json, params=params, headers=send_headers)
            except httpx.RequestError as exc:  # transport failures and undecodable responses
                last_error = exc
                self.breaker.record_failure()
                log.warning("http.call_failed", upstream=self.base_url, path=path, attempt=attempt, error=str(exc))
            else:
                # 429 means the upstream is alive and asking us to slow down: retry, but
                # do not count it towards opening the circuit. Nor does a 500 (or 501): the upstream is up and
                # answered, it failed on this request — a batch caller isolates the item that makes it fail, and
                # an open circuit would stop every other request with it.
                if response.status_code >= 500 and response.status_code not in UPSTREAM_UP_ERRORS:
                    self.breaker.record_failure()
                else:
                    self.breaker.record_success()
                if response.status_code not in RETRY_STATUSES:
                    return response
                last_error = None
                log.warning("http.call_retryable", upstream=self.base_url, path=path, status=response.status_code)
            if attempt + 1 < attempts:
                self._sleep_before_retry(attempt, response)
            elif response is not None:
                return response
        raise UpstreamUnavailable(f"{method} {self.base_url}{path} failed after {attempts} attempt(s): {last_error}")

    def _send(
        self, method: str, path: str, *, json: Any, params: dict[str, Any] | None, headers: dict[str, str]
    ) -> httpx.Response:
        """One attempt. A 401 to a cached token (revoked, or signed with a key the portal has since retired) is
        answered by forgetting that token and sending once more with a fresh one, whatever the method: the upstream
        refused the request before doing anything. A second 401, or a 401 to a token fetched moments ago, is returned
        as it is."""
        response, token = self._send_once(method, path, json=json, params=params, headers=headers)
        if response.status_code != 401 or token is None or not (self.credentials and self.audience):
            return response
        renew = self.credentials.invalidate(self.audience, token)
        log.warning("http.token_refused", upstream=self.base_url, path=path, audience=self.audience, renewed=renew)
        if renew:
            self.breaker.record_success()  # it answered: a half-open trial is over before the next one
            response, _ = self._send_once(method, path, json=json, params=params, headers=headers)
        return response

    def _send_once(
        self, method: str, path: str, *, json: Any, params: dict[str, Any] | None, headers: dict[str, str]
    ) -> tuple[httpx.Response, str | None]:
        token = None
        # Token and request are made before the breaker admits the call: a token-endpoint failure
        # or an unsendable body must not leave a half-open trial in flight forever.
        if self.audience and self.credentials:
            token = self.credentials.token_for(self.audience)
            headers["Authorization"] = f"Bearer {token}"
        outgoing = self._client.build_request(method, path, json=json, params=params, headers=headers)
        self.breaker.before_call()
        return self._client.send(outgoing), token

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


_shared_clients: dict[tuple[str, ...], ServiceClient] = {}
_shared_clients_lock = threading.Lock()


def shared_client(
    *, url_setting: str, audience: str, timeout: float, unavailable: type[Exception], retries: int = 0
) -> ServiceClient:
    """One :class:`ServiceClient` per process for the upstream at ``settings.<url_setting>``, called with this
    process's machine identity (:func:`default_credentials`), so its token is cached between requests.

    The client is kept per URL and identity (tests change them). Whatever stops a client from being made is raised
    as ``unavailable(reason)``, in words for a page: no credentials, the setting unset, or not a URL.
    """
    credentials = default_credentials()
    if credentials is None:
        prefix = settings.ATRIUM_SERVICE.upper()
        raise unavailable(
            f"this process has no machine credentials ({prefix}_CLIENT_ID / {prefix}_CLIENT_SECRET, or ATRIUM_CLIENT_ID"
            " / ATRIUM_CLIENT_SECRET, and ATRIUM_TOKEN_URL)"
        )
    base_url = getattr(settings, url_setting, "")
    if not base_url:
        raise unavailable(f"{url_setting} is not set")
    key = (base_url, audience, credentials.token_url, credentials.client_id, credentials.client_secret)
    with _shared_clients_lock:
        client = _shared_clients.get(key)
        if client is None:
            try:
                client = ServiceClient(
                    base_url=base_url,
                    audience=audience,
                    credentials=credentials,
                    timeout=timeout,
                    connect_timeout=timeout,
                    retries=retries,
                )
            except httpx.InvalidURL as exc:
                raise unavailable(f"{url_setting} is not a URL ({exc})") from exc
            _shared_clients[key] = client
        return client
