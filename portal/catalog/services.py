"""Registering services and heartbeating their instances.

A registration is idempotent: a process registers at every start with the manifest in its code, and only a
change is written (and audited). The first machine client to register a slug owns it: another client's
registration or heartbeat is refused (an operator can hand the service over in the admin by clearing
``registered_by``). A health URL must be one the portal may poll (:func:`health_url_check`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.catalog import queries
from portal.catalog.errors import (
    HEALTH_URL_BLOCKED,
    HEALTH_URL_FOREIGN_HOST,
    HEALTH_URL_INVALID,
    HealthURLRefused,
    ServiceNotFound,
    ServiceRegisteredByAnotherClient,
)
from portal.catalog.models import Dependency, Instance, Service, Team
from services.kit import outbound
from services.kit.audit import audit_record
from services.kit.logs import get_logger

log = get_logger(__name__)

# Manifest fields stored on the service as they come.
SERVICE_FIELDS = (
    "display_name",
    "description",
    "part_of",
    "role",
    "tier",
    "lifecycle",
    "repository_url",
    "docs_url",
    "base_url",
    "health_url",
    "openapi_url",
    "version",
    "queues",
    "tags",
    "health_interval_seconds",
)


@dataclass
class Registration:
    service: Service
    created: bool
    changed: dict[str, list[Any]]


def _may_act(service: Service, client_id: str | None) -> bool:
    """People (None) and the registering client act for a service; a service nobody registered is anyone's."""
    return client_id is None or service.registered_by in ("", client_id)


def _not_yours(slug: str, doing: str) -> ServiceRegisteredByAnotherClient:
    return ServiceRegisteredByAnotherClient(
        f"Service {slug!r} was registered by another machine client; only it may {doing}."
    )


def _owned(slug: str, client_id: str | None, doing: str) -> Service:
    """The service, if ``client_id`` may act for it (404 / 403 otherwise)."""
    service = Service.objects.filter(slug=slug).first()
    if service is None:
        raise ServiceNotFound(f"No service {slug!r} in the catalog; register it first.")
    if not _may_act(service, client_id):
        raise _not_yours(slug, doing)
    return service


def calls_report(*, slug: str, client_id: str | None, callers: dict[str, int]) -> int:
    """Add the calls ``slug`` reports having received (caller client id → count); return how many callers."""
    from portal.catalog.graph import calls_record

    return calls_record(_owned(slug, client_id, "report its calls"), callers)


def _dependency_keys(items: list[dict[str, str]]) -> list[tuple[str, str]]:
    keys = {(item.get("service", ""), item.get("resource", "")) for item in items}
    return sorted(keys)


def health_url_check(*, health_url: str, base_url: str) -> None:
    """Refuse a health URL the portal must not poll (:class:`HealthURLRefused`): one the kit's outbound guard
    cannot read, one whose host is an address the guard refuses (in any spelling), and one that is neither on
    the host of the service's own base URL nor an address in an allow-listed network. A host name is checked
    against the addresses it resolves to when it is polled, not here (they may change)."""
    if not health_url:
        return
    try:
        url = outbound.url_parse(health_url)
    except outbound.OutboundRefused as refused:
        raise HealthURLRefused(
            HEALTH_URL_INVALID,
            "Not a URL the portal polls: http or https, no user name or password, at most "
            f"{outbound.MAX_URL_LENGTH} characters, a plain host name (xn-- for international ones) or an IP "
            "address (IPv6 in brackets, without a zone).",
        ) from refused
    if url.address is not None and not outbound.address_allowed(url.address):
        raise HealthURLRefused(
            HEALTH_URL_BLOCKED,
            f"{url.address} is a loopback, private, link-local or otherwise reserved address and is not in "
            "ATRIUM_OUTBOUND_ALLOW_NETWORKS.",
        )
    if url.address is not None and any(url.address in net for net in outbound.allow_networks()):
        return
    base_host = _url_host(base_url)
    if base_host is None or base_host != url.host:
        raise HealthURLRefused(
            HEALTH_URL_FOREIGN_HOST,
            f"The health URL's host {url.host!r} must be the host of the service's base URL "
            f"({base_host or 'none given'}), or an address in ATRIUM_OUTBOUND_ALLOW_NETWORKS.",
        )


def manifest_health_url_check(*, manifest: dict[str, Any], service: Service | None) -> None:
    """:func:`health_url_check` of the health and base URLs ``service`` (None: a new one) would have once
    ``manifest`` is registered: a new base URL moves the host its health URL must be on."""
    if "health_url" in manifest or "base_url" in manifest:
        health_url_check(
            health_url=manifest.get("health_url", service.health_url if service else ""),
            base_url=manifest.get("base_url", service.base_url if service else ""),
        )


def _url_host(url: str) -> str | None:
    """``url``'s host as the guard reads it (the same address in any spelling is the same host)."""
    try:
        return outbound.url_parse(url).host if url else None
    except outbound.OutboundRefused:
        return None


def service_register(*, slug: str, manifest: dict[str, Any], client_id: str | None) -> Registration:
    """Create or update ``slug`` from ``manifest`` (validated); ``client_id`` is the registering machine client
    (None: a user, e.g. an operator in the API)."""
    with transaction.atomic():
        queries.service_register_lock(slug=slug)  # first registrations of one slug at once: one creates it
        service = Service.objects.select_for_update().filter(slug=slug).first()
        created = service is None
        if service is None:
            service = Service(slug=slug, registered_by=client_id or "")
        elif not _may_act(service, client_id):
            raise _not_yours(slug, "update the service")
        elif client_id is not None and not service.registered_by:
            service.registered_by = client_id
        manifest_health_url_check(manifest=manifest, service=None if created else service)
        changed: dict[str, list[Any]] = {}
        for name in SERVICE_FIELDS:
            if name in manifest and getattr(service, name) != manifest[name]:
                changed[name] = [None if created else getattr(service, name), manifest[name]]
                setattr(service, name, manifest[name])
        team = manifest.get("team")
        if team is not None:
            owner = _team(team)
            if service.owner_id != owner.id:
                changed["team"] = [service.owner.slug if service.owner else None, owner.slug]
                service.owner = owner
        service.save()
        if "dependencies" in manifest:
            before = [] if created else _dependency_keys(_declared(service))
            after = _dependency_keys(manifest["dependencies"])
            if before != after:
                _dependencies_set(service, after)
                changed["dependencies"] = [None if created else _labels(before), _labels(after)]
        if created:
            # Declarations of other services that named this one before it registered.
            Dependency.objects.filter(target_slug=slug, target__isnull=True).update(target=service)
        if created or changed:
            audit_record(
                "catalog.service.registered" if created else "catalog.service.updated",
                object_type="catalog.service",
                object_id=slug,
                changes=changed,
                metadata={"registered_by": service.registered_by},
            )
    if created or changed:
        log.info("catalog.service_registered", slug=slug, created=created, changed=sorted(changed))
    return Registration(service, created, changed)


def _labels(keys: list[tuple[str, str]]) -> list[str]:
    return [target or resource for target, resource in keys]


def _team(data: dict[str, str]) -> Team:
    team, _ = Team.objects.get_or_create(slug=data["slug"], defaults={"name": data.get("name") or data["slug"]})
    updates = {k: data[k] for k in ("name", "contact", "on_call") if data.get(k) and getattr(team, k) != data[k]}
    if updates:
        for key, value in updates.items():
            setattr(team, key, value)
        team.save(update_fields=[*updates, "updated_at"])
    return team


def _declared(service: Service) -> list[dict[str, str]]:
    return [{"service": d.target_slug, "resource": d.resource} for d in service.dependencies.all()]


def _dependencies_set(service: Service, keys: list[tuple[str, str]]) -> None:
    service.dependencies.all().delete()
    targets = {s.slug: s for s in Service.objects.filter(slug__in=[k[0] for k in keys if k[0]])}
    Dependency.objects.bulk_create(
        [Dependency(service=service, target_slug=s, target=targets.get(s), resource=r) for s, r in keys]
    )


def instance_heartbeat(
    *,
    slug: str,
    instance: str,
    client_id: str | None,
    host: str = "",
    pid: int | None = None,
    version: str = "",
    started_at: dt.datetime | None = None,
) -> tuple[Instance, bool]:
    """Record a heartbeat of ``instance`` of ``slug`` (created on its first); return it and whether it is new."""
    service = _owned(slug, client_id, "heartbeat its instances")
    now = timezone.now()
    instance_id, inserted = queries.instance_heartbeat(
        service_id=service.id, instance=instance, host=host, pid=pid, version=version, started_at=started_at, now=now
    )
    if inserted:
        log.info("catalog.instance_started", slug=slug, instance=instance, host=host, pid=pid)
    return Instance.objects.select_related("service").get(id=instance_id), bool(inserted)


def heartbeat_interval() -> int:
    """Seconds between an instance's heartbeats (what each answer tells the instance)."""
    return int(getattr(settings, "CATALOG_HEARTBEAT_SECONDS", 10))
