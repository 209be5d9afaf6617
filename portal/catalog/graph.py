"""Declared and observed dependencies, and the graph that compares them.

*Declared* edges come from the manifests (:class:`~portal.catalog.models.Dependency`). *Observed* edges come
from the services themselves: each reports, in batches, which machine clients called it and how often
(:func:`calls_record`); a caller is the service that client registered (``Service.registered_by``; of several,
the one with a base URL), since every service-to-service call carries a token naming its caller. An edge is
observed if a call was reported in the last ``CATALOG_OBSERVED_DAYS``.

Drift, both ways: ``declared_not_observed`` (declared, never or no longer used) and ``observed_not_declared``
(used without being declared).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Prefetch
from django.utils import timezone

from portal.catalog import queries
from portal.catalog.models import Dependency, Instance, ObservedCall, Service
from portal.catalog.status import service_status
from portal.catalog.systems import groups


def calls_record(service: Service, callers: dict[str, int], *, at: dt.datetime | None = None) -> int:
    """Add a batch of calls ``service`` received (caller client id → count); return how many callers."""
    items = sorted((client, count) for client, count in callers.items() if count > 0)
    if not items:
        return 0
    at = at or timezone.now()
    queries.calls_add(service_id=service.id, at=at, callers=[c for c, _ in items], counts=[n for _, n in items])
    return len(items)


@dataclass
class Edge:
    source: str
    target: str
    kind: str  # "service" or "resource"
    declared: bool = False
    observed: bool = False
    calls: int = 0
    last_seen: dt.datetime | None = None

    @property
    def drift(self) -> str | None:
        if self.kind != "service":
            return None
        if self.declared and not self.observed:
            return "declared_not_observed"
        if self.observed and not self.declared:
            return "observed_not_declared"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "kind": self.kind,
            "declared": self.declared,
            "observed": self.observed,
            "calls": self.calls,
            "last_seen": self.last_seen.isoformat().replace("+00:00", "Z") if self.last_seen else None,
            "drift": self.drift,
        }


@dataclass
class Graph:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "edges": [e.as_dict() for e in self.edges]}


def _callers(services: list[Service]) -> dict[str, str]:
    """Machine client → the service its calls are drawn from. One client often registers several processes (a
    service's web server and its workers share its identity): its calls belong to the one with an API (a base
    URL), else to the first it registered."""
    by_client: dict[str, Service] = {}
    for service in sorted(services, key=lambda s: (not s.base_url, s.created_at, s.slug)):
        if service.registered_by:
            by_client.setdefault(service.registered_by, service)
    return {client: service.slug for client, service in by_client.items()}


def graph(*, now: dt.datetime | None = None) -> Graph:
    """Every service (and declared resource) as a node; every declared or recently observed edge."""
    now = now or timezone.now()
    since = now - dt.timedelta(days=float(getattr(settings, "CATALOG_OBSERVED_DAYS", 7)))
    services = list(Service.objects.select_related("owner").prefetch_related("instances").order_by("slug"))
    by_client = _callers(services)
    edges: dict[tuple[str, str, str], Edge] = {}
    resources: set[str] = set()
    for dep in Dependency.objects.select_related("service"):
        if dep.target_slug:
            key = (dep.service.slug, dep.target_slug, "service")
        else:
            key = (dep.service.slug, dep.resource, "resource")
            resources.add(dep.resource)
        edges.setdefault(key, Edge(key[0], key[1], key[2])).declared = True
    for call in ObservedCall.objects.select_related("callee").filter(last_seen__gte=since):
        caller = by_client.get(call.caller_client)
        if caller is None:  # a client that registered no service (a person's script, a partner): not an edge
            continue
        key = (caller, call.callee.slug, "service")
        edge = edges.setdefault(key, Edge(key[0], key[1], "service"))
        edge.observed = True
        edge.calls += call.calls
        edge.last_seen = max(filter(None, [edge.last_seen, call.last_seen]))
    nodes = [
        {
            "id": s.slug,
            "kind": "service",
            "display_name": s.display_name,
            "team": s.owner.slug if s.owner else None,
            "tier": s.tier,
            "lifecycle": s.lifecycle,
            "health_status": s.health_status or None,
            "status": service_status(s, s.instances.all(), now=now),
        }
        for s in services
    ]
    known = {s.slug for s in services}
    nodes += [
        {"id": slug, "kind": "service", "display_name": slug, "registered": False}
        for slug in sorted({e.target for e in edges.values() if e.kind == "service"} - known)
    ]
    nodes += [{"id": name, "kind": "resource", "display_name": name} for name in sorted(resources)]
    return Graph(nodes, sorted(edges.values(), key=lambda e: (e.source, e.target, e.kind)))


def service_graph(*, now: dt.datetime | None = None, resources: bool = False) -> Graph:
    """The graph between *services* (processes grouped by the service they are part of): a node per service
    (its status as :mod:`~portal.catalog.systems` derives it, its processes and the resources they use), an
    edge per pair of services one of whose processes declares or calls the other (edges inside a service —
    a worker and its own API — are left out). Resources are folded into each node (``resources``) unless
    ``resources=True``: then they are nodes of their own too, with an edge from each service using them."""
    now = now or timezone.now()
    since = now - dt.timedelta(days=float(getattr(settings, "CATALOG_OBSERVED_DAYS", 7)))
    entries = _entries_with_instances()
    part_of = {s.slug: s.part_of or s.slug for s in entries}
    found = groups(entries, now=now)
    callers = {client: part_of[slug] for client, slug in _callers(entries).items()}
    edges: dict[tuple[str, str, str], Edge] = {}
    used: dict[str, set[str]] = {g.slug: set() for g in found}
    for dep in Dependency.objects.select_related("service"):
        source = part_of.get(dep.service.slug, dep.service.slug)
        if dep.target_slug:
            target = part_of.get(dep.target_slug, dep.target_slug)
            if target == source:
                continue
            edges.setdefault((source, target, "service"), Edge(source, target, "service")).declared = True
        else:
            used.setdefault(source, set()).add(dep.resource)
            if resources:
                key = (source, dep.resource, "resource")
                edges.setdefault(key, Edge(source, dep.resource, "resource")).declared = True
    for call in ObservedCall.objects.select_related("callee").filter(last_seen__gte=since):
        caller = callers.get(call.caller_client)
        target = part_of.get(call.callee.slug, call.callee.slug)
        if caller is None or caller == target:
            continue
        edge = edges.setdefault((caller, target, "service"), Edge(caller, target, "service"))
        edge.observed = True
        edge.calls += call.calls
        edge.last_seen = max(filter(None, [edge.last_seen, call.last_seen]))
    nodes: list[dict[str, Any]] = [
        {
            "id": g.slug,
            "kind": "service",
            "display_name": g.display_name,
            "team": g.team.slug if g.team else None,
            "tier": g.tier,
            "lifecycle": g.lifecycle,
            "status": g.status,
            "processes": [{"slug": p.slug, "role": p.role, "status": p.status} for p in g.processes],
            "resources": sorted(used.get(g.slug, ())),
        }
        for g in found
    ]
    known = {g.slug for g in found}
    nodes += [
        {"id": slug, "kind": "service", "display_name": slug, "registered": False}
        for slug in sorted({e.target for e in edges.values() if e.kind == "service"} - known)
    ]
    if resources:
        nodes += [
            {"id": name, "kind": "resource", "display_name": name}
            for name in sorted({e.target for e in edges.values() if e.kind == "resource"})
        ]
    return Graph(nodes, sorted(edges.values(), key=lambda e: (e.source, e.target, e.kind)))


def _entries_with_instances() -> list[Service]:
    """Every catalog entry with what its status needs (as the selectors load them for pages)."""
    gone = "gone"
    return list(
        Service.objects.select_related("owner")
        .prefetch_related(
            Prefetch(
                "instances",
                queryset=Instance.objects.exclude(status=gone).order_by("-last_heartbeat", "instance"),
                to_attr="current_instances",
            ),
            Prefetch(
                "instances",
                queryset=Instance.objects.filter(status=gone).order_by("-last_heartbeat")[:1],
                to_attr="latest_gone",
            ),
        )
        .order_by("slug")
    )
