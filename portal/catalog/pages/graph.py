"""The catalog's dependency graph page: the picture, what every critical service takes down with it, and the
drift edges as a list."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from django.utils import timezone
from django.utils.safestring import SafeString

from portal.catalog.graph import graph
from portal.catalog.pages.common import DependencyRow, ServiceRow, service_rows
from portal.catalog.status import UNKNOWN
from portal.ui.charts.graph import GraphNode, dependents, graph_svg


@dataclass(frozen=True)
class CriticalRow:
    service: ServiceRow
    dependents: list[ServiceRow]


@dataclass
class GraphPage:
    svg: SafeString
    nodes: int
    edges: int
    critical: list[CriticalRow]
    drift: list[DependencyRow]
    now: dt.datetime


def _resource_id(name: str) -> str:
    return f"resource:{name}"


def graph_page(*, now: dt.datetime | None = None) -> GraphPage:
    """The dependency graph as a picture, with its statuses derived on read, what every critical service
    takes down with it, and the drift edges as a list."""
    now = now or timezone.now()
    found = graph(now=now)
    rows = {r.service.slug: r for r in service_rows(now=now, with_uptime=False)}
    nodes: list[GraphNode] = []
    for n in found.nodes:
        if n["kind"] == "resource":
            nodes.append(GraphNode(_resource_id(n["id"]), "resource", n["id"], status=""))
            continue
        row = rows.get(n["id"])
        detail = f"tier {n['tier']}" + (f" \u00b7 {n['team']}" if n.get("team") else "") if row else ""
        nodes.append(
            GraphNode(
                n["id"],
                "service",
                n["display_name"],
                status=row.status if row else UNKNOWN,
                registered=row is not None,
                url=row.url if row else "",
                detail=detail,
            )
        )
    edges = [dataclasses.replace(e, target=_resource_id(e.target)) if e.kind == "resource" else e for e in found.edges]
    critical = [
        CriticalRow(rows[slug], [rows[d] for d in dependents(slug, nodes, edges) if d in rows])
        for slug, row in rows.items()
        if row.status == "critical"
    ]
    drift = [
        DependencyRow(
            other=e.target,
            other_url=rows[e.target].url if e.target in rows else "",
            other_status=rows[e.target].status if e.target in rows else UNKNOWN,
            kind=e.kind,
            registered=e.target in rows,
            edge=e,
        )
        for e in found.edges
        if e.drift
    ]
    return GraphPage(
        svg=graph_svg(nodes, edges),
        nodes=len(nodes),
        edges=len(edges),
        critical=critical,
        drift=drift,
        now=now,
    )
