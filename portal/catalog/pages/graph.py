"""The catalog's dependency graph page: services (not processes) as boxes, each with its processes and, folded
in, the resources they use (or, on demand, the resources as nodes of their own); what every critical service
takes down with it; the drift edges as a list."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from dataclasses import dataclass

from django.utils import timezone
from django.utils.safestring import SafeString

from portal.catalog.graph import Edge, service_graph
from portal.catalog.pages.common import service_url
from portal.catalog.status import UNKNOWN
from portal.ui.charts.graph import DRIFT_LABELS, GraphNode, dependents, graph_svg


@dataclass(frozen=True)
class NodeRow:
    slug: str
    url: str
    status: str


@dataclass(frozen=True)
class CriticalRow:
    service: NodeRow
    dependents: list[NodeRow]


@dataclass(frozen=True)
class DriftRow:
    edge: Edge
    source: NodeRow
    target: NodeRow | None  # None: not in the catalog

    @property
    def drift_label(self) -> str:
        return DRIFT_LABELS.get(self.edge.drift or "", "")


@dataclass
class GraphPage:
    svg: SafeString
    nodes: int
    edges: int
    services: int
    processes: int
    resources_shown: bool
    critical: list[CriticalRow]
    drift: list[DriftRow]
    now: dt.datetime


def _resource_id(name: str) -> str:
    return f"resource:{name}"


LINE_CHARS = 30  # what fits on a line of a box


def _wrap(parts: list[str]) -> list[str]:
    """``parts`` joined with `` · `` on as few lines of at most :data:`LINE_CHARS` as they fit."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 3 + len(part) <= LINE_CHARS:
            lines[-1] += " \u00b7 " + part
        else:
            lines.append(part)
    return lines


def _processes_parts(processes: list[dict[str, str]]) -> list[str]:
    """``web``, ``2 workers``, ``relay``, ``beat``, with what is down counted: ``2 workers (1 down)``."""
    roles = Counter(p["role"] for p in processes)
    down = Counter(p["role"] for p in processes if p["status"] == "critical")
    parts = []
    for role, count in roles.items():
        name = role if count == 1 else f"{count} {role}s"
        parts.append(f"{name} ({down[role]} down)" if down[role] else name)
    return parts


def graph_nodes(*, now: dt.datetime, resources: bool = False) -> tuple[list[GraphNode], list[Edge], int]:
    """What the picture draws: a box per service (its processes, and the resources folded in unless
    ``resources``), the services depended on that are not registered, and, with ``resources``, the
    resources; and how many processes the services have."""
    found = service_graph(now=now, resources=resources)
    processes = sum(len(n.get("processes", ())) for n in found.nodes)
    nodes: list[GraphNode] = []
    for n in found.nodes:
        if n["kind"] == "resource":
            nodes.append(GraphNode(_resource_id(n["id"]), "resource", n["id"], status=""))
            continue
        if n.get("registered") is False:
            nodes.append(GraphNode(n["id"], "service", n["id"], status=UNKNOWN, registered=False))
            continue
        lines = _wrap(_processes_parts(n["processes"]))
        if not resources and n["resources"]:
            lines += _wrap(n["resources"])
        detail = f"tier {n['tier']}" + (f" \u00b7 {n['team']}" if n.get("team") else "")
        nodes.append(
            GraphNode(
                n["id"],
                "service",
                n["display_name"],
                status=n["status"],
                url=service_url(n["id"]),
                detail=detail,
                lines=tuple(lines),
            )
        )
    edges = [dataclasses.replace(e, target=_resource_id(e.target)) if e.kind == "resource" else e for e in found.edges]
    return nodes, edges, processes


def graph_page(*, now: dt.datetime | None = None, resources: bool = False) -> GraphPage:
    """The dependency graph between services as a picture (statuses derived on read), what every critical
    service takes down with it, and the drift edges as a list."""
    now = now or timezone.now()
    nodes, edges, processes = graph_nodes(now=now, resources=resources)
    rows = {n.id: NodeRow(n.id, n.url, n.status) for n in nodes if n.kind == "service" and n.registered}
    critical = [
        CriticalRow(row, [rows[d] for d in dependents(slug, nodes, edges) if d in rows])
        for slug, row in rows.items()
        if row.status == "critical"
    ]
    drift = [DriftRow(e, rows[e.source], rows.get(e.target)) for e in edges if e.drift and e.source in rows]
    services = [n for n in nodes if n.kind == "service"]
    return GraphPage(
        svg=graph_svg(nodes, edges),
        nodes=len(nodes),
        edges=len(edges),
        services=len(services),
        processes=processes,
        resources_shown=resources,
        critical=critical,
        drift=drift,
        now=now,
    )
