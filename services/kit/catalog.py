"""This process in the portal's service catalog: its registration, its heartbeats, and the calls it received.

Every Atrium process (web server, Celery worker, beat, outbox relay) starts one :class:`CatalogAgent` from its
server's start-up hook (``gunicorn.conf.py``, ``services/kit/celery_app.py``, the relay command). The agent is a
daemon thread that:

1. registers the service — ``PUT /api/v1/catalog/services/{slug}`` with the manifest kept in the service's own
   code (``<package>/manifest.py``) plus what only the running process knows (version, URLs) — retrying with
   backoff for as long as the portal does not answer: a portal outage never stops a service from starting;
2. heartbeats its instance every ``heartbeat_interval_seconds`` the portal answers with (``POST
   .../instances/{instance}/heartbeat``), registering again if the portal lost the service;
3. reports, with each heartbeat, which machine clients called this process since the last report and how often
   (``POST .../calls``): :class:`JWTAuthentication <services.kit.auth.JWTAuthentication>` counts each verified
   token's subject in :data:`calls_received` (a dict increment under a lock), so the cost per request is
   nothing worth measuring; a failed report is kept and sent with the next one.

It speaks with this process's own machine credentials (``<SERVICE>_CLIENT_ID`` / ``_SECRET``, a client allowed
audience ``portal`` and scope ``catalog:register``). Without credentials, or with
``ATRIUM_CATALOG_REGISTER=false``, no agent starts and the process says so once in its log.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.utils.module_loading import import_string

from services.kit.background import BackgroundThread
from services.kit.http import ClientCredentials, ServiceClient, circuit_breaker_for, default_credentials
from services.kit.logs import get_logger

log = get_logger(__name__)

# Callers remembered between reports at most (what one report may carry): a flood of distinct token subjects
# cannot grow memory unbounded.
MAX_CALLERS = 1_000
BACKOFF_MAX_SECONDS = 30.0


class CallCounter:
    """Calls received per calling machine client since the last report (thread-safe)."""

    def __init__(self, limit: int = MAX_CALLERS) -> None:
        self.limit = limit
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, caller: str, count: int = 1) -> None:
        with self._lock:
            if caller in self._counts or len(self._counts) < self.limit:
                self._counts[caller] += count

    def take(self) -> dict[str, int]:
        """What was counted, emptying the counter."""
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
        return counts

    def give_back(self, counts: dict[str, int]) -> None:
        """Counts taken for a report that failed: they go out with the next one."""
        for caller, count in counts.items():
            self.add(caller, count)


calls_received = CallCounter()


def call_count(client_id: str) -> None:
    """Count one call from ``client_id`` (not this process's own client: a process calling itself is no edge)."""
    if client_id != settings.ATRIUM_CLIENT_ID:
        calls_received.add(client_id)


def manifest_load() -> dict[str, Any]:
    """The service's manifest kept in its code (``settings.ATRIUM_MANIFEST``, a module with ``MANIFEST``)."""
    return dict(import_string(f"{settings.ATRIUM_MANIFEST}.MANIFEST"))


def web_manifest(bind: list[str] | None = None) -> dict[str, Any]:
    """The manifest of this service's web process: its code's manifest, version and the URLs it serves on
    (``ATRIUM_PUBLIC_URL`` / ``<SERVICE>_URL``, else the address the server binds to)."""
    manifest = manifest_load()
    base_url = settings.ATRIUM_PUBLIC_URL or _bound_url(bind or [])
    manifest.setdefault("version", settings.SPECTACULAR_SETTINGS["VERSION"])
    if base_url:
        manifest.update(base_url=base_url, health_url=f"{base_url}/health/ready", openapi_url=f"{base_url}/api/schema")
    return manifest


def _bound_url(bind: list[str]) -> str:
    for address in bind:
        if address.startswith(("unix:", "fd://")):
            continue
        host, _, port = address.rpartition(":")
        if host in ("", "0.0.0.0", "[::]", "::"):  # noqa: S104  (reading a bind address, not binding)
            # Every address: this host's name if it is a full one, else its address (a bare pod name is no URL).
            host = socket.getfqdn()
            if "." not in host:
                host = socket.gethostbyname(socket.gethostname())
        return f"http://{host}:{port}"
    return ""


def process_manifest(slug: str, *, display_name: str, description: str, queues: list[str], role: str) -> dict[str, Any]:
    """The manifest of a process with no HTTP API (a worker, beat, a relay, a monitor): part of the service whose
    settings it runs with (``part_of``: the code's manifest's, else ``ATRIUM_SERVICE``), its ``role`` there, the
    service's team, tier and lifecycle, its own name and queues, and the resources it uses; no health URL (its
    heartbeats are its health)."""
    code = manifest_load()
    manifest: dict[str, Any] = {
        "display_name": display_name,
        "description": description,
        "part_of": code.get("part_of") or _service_name(),
        "role": role,
        "version": settings.SPECTACULAR_SETTINGS["VERSION"],
        "queues": queues,
        "tags": sorted({*code.get("tags", []), "process"}),
        "dependencies": [
            {"resource": "postgres"},
            {"resource": "redis"},
            *[{"resource": f"queue:{q}"} for q in queues],
        ],
    }
    for key in ("team", "tier", "lifecycle", "repository_url", "docs_url"):
        if key in code:
            manifest[key] = code[key]
    return manifest


class CatalogAgent(BackgroundThread):
    """Registers ``slug`` with ``manifest``, then heartbeats ``instance`` and reports calls, until stopped."""

    def __init__(
        self,
        *,
        slug: str,
        manifest: dict[str, Any] | Callable[[], dict[str, Any]],
        instance: str,
        portal_url: str,
        credentials: ClientCredentials,
        pid: int | None = None,
        started_at: dt.datetime | None = None,
        report_calls: bool = True,
        interval: float = 10.0,
        timeout: float = 3.0,
    ) -> None:
        super().__init__(name=f"catalog-agent-{slug}")
        self.slug = slug
        self._manifest = manifest
        self.instance = instance
        self.pid = pid or os.getpid()
        self.started_at = started_at or dt.datetime.now(dt.UTC)
        self.report_calls = report_calls
        self.interval = interval
        self.registered = threading.Event()
        self.version = ""
        self.beats = 0
        # No retries inside a call (the loop retries) and a breaker of its own (the portal being away must not
        # open the breaker other portal clients of this process share, nor the reverse).
        self.client = ServiceClient(
            base_url=portal_url,
            audience="portal",
            credentials=credentials,
            timeout=timeout,
            connect_timeout=min(timeout, 2.0),
            retries=0,
            breaker=circuit_breaker_for(f"catalog-agent:{portal_url}", failure_threshold=1_000_000),
        )
        self._path = f"/api/v1/catalog/services/{quote(slug, safe='')}"

    # --- the loop --------------------------------------------------------------------------------------------
    def run(self) -> None:
        failures = 0
        while not self.halt.is_set():
            try:
                if not self.registered.is_set():
                    self._register()
                self._heartbeat()
                if self.report_calls:
                    self._report()
                failures = 0
                wait = self.interval
            except Exception as exc:  # the agent logs and retries; it never takes its process down
                failures += 1
                wait = min(BACKOFF_MAX_SECONDS, 0.5 * 2 ** min(failures, 6))
                level = log.warning if failures == 1 or failures % 10 == 0 else log.debug
                level("catalog.agent_failed", slug=self.slug, attempt=failures, retry_in=wait, error=str(exc)[:300])
            self.halt.wait(wait)

    def stop(self, timeout: float = 3.0, *, report: bool = True) -> bool:
        """Stop the loop; send the calls counted since the last report (best effort, ``timeout`` at most); close the
        client. The loop is joined first: its last call must not share a client the report or the close is using
        (a close while the loop's call was in flight surfaced as "Bad file descriptor")."""
        ended = super().stop(timeout)
        if report and self.report_calls and self.registered.is_set():
            try:
                self._report()
            except Exception as exc:
                log.warning("catalog.agent_final_report_failed", slug=self.slug, error=str(exc)[:300])
        if not self.is_alive():
            self.client.close()
        return ended

    # --- the calls -------------------------------------------------------------------------------------------
    def _check(self, response: Any, doing: str) -> Any:
        if response.status_code >= 400:
            detail = response.text[:300]
            raise AgentRefused(f"{doing}: HTTP {response.status_code}: {detail}", status=response.status_code)
        return response.json()

    def manifest(self) -> dict[str, Any]:
        return self._manifest() if callable(self._manifest) else dict(self._manifest)

    def _register(self) -> None:
        manifest = self.manifest()
        body = self._check(self.client.request("PUT", self._path, json=manifest), "registration")
        self.version = str(manifest.get("version", ""))[:100]  # what each heartbeat reports, until it registers again
        self.registered.set()
        log.info("catalog.registered", slug=self.slug, instance=self.instance, version=body.get("version"))

    def _heartbeat(self) -> None:
        response = self.client.post(
            f"{self._path}/instances/{quote(self.instance, safe='')}/heartbeat",
            json={
                "host": socket.gethostname()[:255],
                "pid": self.pid,
                "version": self.version,
                "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            },
        )
        if response.status_code == 404:  # the portal lost the service (restored from a backup?): register again
            self.registered.clear()
        body = self._check(response, "heartbeat")
        self.beats += 1
        interval = body.get("heartbeat_interval_seconds")
        if isinstance(interval, int | float) and interval > 0:
            self.interval = float(interval)

    def _report(self) -> None:
        counts = calls_received.take()
        if not counts:
            return
        try:
            self._check(self.client.post(f"{self._path}/calls", json={"callers": counts}), "calls report")
        except BaseException:
            calls_received.give_back(counts)
            raise


class AgentRefused(Exception):
    """The portal answered a catalog call with an error (``status``: its HTTP status)."""

    def __init__(self, detail: str, *, status: int) -> None:
        super().__init__(detail)
        self.status = status


_agent: CatalogAgent | None = None
_agent_lock = threading.Lock()


def agent_start(
    *,
    slug: str,
    manifest: dict[str, Any] | Callable[[], dict[str, Any]],
    instance: str | None = None,
    pid: int | None = None,
    started_at: dt.datetime | None = None,
    report_calls: bool = True,
) -> CatalogAgent | None:
    """Start this process's agent (once); None when registration is off or the process has no credentials."""
    global _agent
    with _agent_lock:
        if _agent is not None and _agent.is_alive():
            return _agent
        if not settings.ATRIUM_CATALOG_REGISTER:
            log.info("catalog.registration_off", slug=slug)
            return None
        if not settings.ATRIUM_PORTAL_URL:  # no catalog to register with (the default in tests)
            log.info("catalog.registration_off", slug=slug, reason="ATRIUM_PORTAL_URL is not set")
            return None
        credentials = default_credentials()
        if credentials is None:
            log.warning("catalog.registration_skipped", slug=slug, reason="no machine credentials")
            return None
        pid = pid or os.getpid()
        _agent = CatalogAgent(
            slug=slug,
            manifest=manifest,
            instance=instance or f"{socket.gethostname()}:{pid}",
            portal_url=settings.ATRIUM_PORTAL_URL,
            credentials=credentials,
            pid=pid,
            started_at=started_at,
            report_calls=report_calls,
            interval=float(settings.ATRIUM_CATALOG_HEARTBEAT_SECONDS),
        )
        _agent.start()
        return _agent


def agent_stop() -> None:
    """Stop this process's agent, sending its last call counts (at exit)."""
    global _agent
    with _agent_lock:
        agent, _agent = _agent, None
    if agent is not None:
        agent.stop()


def agent_current() -> CatalogAgent | None:
    return _agent


def wait_registered(timeout: float) -> bool:
    """Whether this process's agent registered within ``timeout`` seconds (tests, diagnostics)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agent = _agent
        if agent is not None and agent.registered.wait(0.1):
            return True
        time.sleep(0.05)
    return False


# --- start-up hooks of each kind of process ------------------------------------------------------------------


def _service_name() -> str:
    return settings.ATRIUM_SERVICE


def web_agent_start(*, bind: list[str], master_pid: int, started_at: dt.datetime | None) -> CatalogAgent | None:
    """From a gunicorn worker (``post_worker_init``): the server — its master — is the instance, so every worker
    of it heartbeats the same instance and each reports the calls it served."""
    return agent_start(
        slug=_service_name(),
        manifest=lambda: web_manifest(bind),
        instance=f"{socket.gethostname()}:{master_pid}",
        pid=master_pid,
        started_at=started_at,
    )


def worker_agent_start(queues: list[str]) -> CatalogAgent | None:
    """From a Celery worker's main process (``worker_ready``): ``worker-<queues>``, e.g. ``worker-ledger``."""
    names = sorted(queues)
    slug = ("worker-" + "-".join(names))[:50].rstrip("-")
    service = _service_name()
    return agent_start(
        slug=slug,
        manifest=lambda: process_manifest(
            slug,
            display_name=f"Worker: {', '.join(names)}",
            description=f"Celery worker consuming {', '.join(names)} with the {service} service's settings.",
            queues=names,
            role="worker",
        ),
        report_calls=False,
    )


def beat_agent_start() -> CatalogAgent | None:
    """From Celery beat (``beat_init``)."""
    return agent_start(
        slug="beat",
        manifest=lambda: process_manifest(
            "beat", display_name="Beat", description="Celery beat: the periodic task schedule.", queues=[], role="beat"
        ),
        report_calls=False,
    )


def process_agent_start(
    slug: str, *, display_name: str, description: str, role: str = "monitor"
) -> CatalogAgent | None:
    """From any other long-running process (a management command, e.g. the job monitor): ``slug``, no HTTP, no
    queues."""
    return agent_start(
        slug=slug,
        manifest=lambda: process_manifest(
            slug, display_name=display_name, description=description, queues=[], role=role
        ),
        report_calls=False,
    )


def relay_agent_start() -> CatalogAgent | None:
    """From ``manage.py outbox_relay``: ``relay-<service>``."""
    service = _service_name()
    return agent_start(
        slug=f"relay-{service}",
        manifest=lambda: process_manifest(
            f"relay-{service}",
            display_name=f"Outbox relay: {service}",
            description=f"Publishes the {service} service's outbox events to their queues.",
            queues=[],
            role="relay",
        ),
        report_calls=False,
    )
