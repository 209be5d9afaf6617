"""The services-first dependency graph stays readable at the size the issue asks for: 10 services made of 40
processes (a web process, workers, a relay and beat each), declared and observed dependencies between them, every
process using PostgreSQL and Redis.

Readable, stated as numbers (docs/catalog.md says the same):

* no two boxes overlap, and every two are at least ``MIN_GAP`` apart;
* the edges' drawn ways cross each other at most ``MAX_CROSSINGS`` times (the catalog below needs some: three
  services called by most of the others cannot all be drawn without a crossing);
* one box per service, not per process, and with the resources folded in no box per resource.

The layout is grandalf's Sugiyama (layered) layout, the same that draws the page.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from portal.catalog.models import Dependency, Instance, ObservedCall, Service
from portal.catalog.pages.graph import graph_nodes
from portal.ui.charts.graph import NODE_W, boxes_overlap, edge_crossings, graph_svg, layout

pytestmark = pytest.mark.django_db

MIN_GAP = 12.0
MAX_CROSSINGS = 12

# service → (workers, the services it depends on); each has a web process, its workers, a relay and beat
# except where it says otherwise: 10 services, 40 processes.
CATALOG = {
    "portal": (2, []),
    "ledger": (1, ["portal"]),
    "payments": (1, ["ledger", "portal"]),
    "webhooks": (1, ["payments", "portal"]),
    "reporting": (1, ["ledger", "payments", "portal"]),
    "fraud": (1, ["payments", "portal"]),
    "notifications": (1, ["webhooks", "portal"]),
    "billing": (1, ["ledger", "payments", "notifications", "portal"]),
    "statements": (1, ["ledger", "reporting", "portal"]),
    "onboarding": (0, ["fraud", "notifications", "portal"]),
}


def _catalog_of_ten() -> int:
    """The catalog above, every process heartbeating; how many processes."""
    now = timezone.now()
    processes = 0
    for slug, (workers, depends_on) in CATALOG.items():
        names = [(slug, "web"), *[(f"worker-{slug}-{n}", "worker") for n in range(workers)]]
        names += [(f"relay-{slug}", "relay"), (f"beat-{slug}", "beat")]
        for name, role in names:
            entry = Service.objects.create(
                slug=name,
                display_name=name.title(),
                part_of=slug,
                role=role,
                registered_by=f"cli_{slug}",
                base_url=f"https://{slug}.example" if role == "web" else "",
            )
            Instance.objects.create(service=entry, instance=f"h:{name}", first_heartbeat=now, last_heartbeat=now)
            Dependency.objects.create(service=entry, resource="postgres")
            Dependency.objects.create(service=entry, resource="redis")
            if role == "web":
                for target in depends_on:
                    Dependency.objects.create(service=entry, target_slug=target)
            else:  # a worker calls its own API: no edge between services
                Dependency.objects.create(service=entry, target_slug=slug)
            processes += 1
    # observed calls, all from declared dependencies but one (drift, drawn too)
    ledger = Service.objects.get(slug="ledger")
    for caller in ("payments", "reporting", "billing", "statements", "onboarding"):
        ObservedCall.objects.create(
            callee=ledger, caller_client=f"cli_{caller}", calls=10, first_seen=now, last_seen=now
        )
    Service.objects.filter(slug="portal").update(last_checked_at=now - dt.timedelta(seconds=1))
    return processes


def test_ten_services_of_forty_processes_are_drawn_as_ten_readable_boxes():
    # given
    processes = _catalog_of_ten()
    assert processes == 40

    # when
    nodes, edges, counted = graph_nodes(now=timezone.now())
    where = layout(nodes, edges)

    # then: a box per service, resources folded in
    assert counted == 40
    assert sorted(n.id for n in nodes) == sorted(CATALOG)
    assert all(n.kind == "service" for n in nodes)
    assert all("postgres \u00b7 redis" in n.lines for n in nodes)
    assert len([e for e in edges if e.kind == "service"]) == sum(len(d) for _, d in CATALOG.values()) + 1
    assert boxes_overlap(where, gap=MIN_GAP) == []
    crossings = edge_crossings(where)
    assert crossings <= MAX_CROSSINGS, crossings
    # and it fits a screen's width: at most five layers side by side
    assert where.width <= 5 * (NODE_W + 90) + 40 + 960
    svg = str(graph_svg(nodes, edges))
    assert svg.count('class="node node-service') == 10


def test_the_resources_shown_on_demand_are_laid_out_without_overlap_too():
    _catalog_of_ten()

    nodes, edges, _ = graph_nodes(now=timezone.now(), resources=True)
    where = layout(nodes, edges)

    assert sorted(n.label for n in nodes if n.kind == "resource") == ["postgres", "redis"]
    assert boxes_overlap(where, gap=MIN_GAP) == []


def test_the_measures_see_an_overlap_and_a_crossing():
    """The two measures can fail: two boxes on top of each other, and an X of two edges."""
    from portal.ui.charts.graph import GraphNode, Layout, Placed

    a, b = Placed(GraphNode("a"), 0, 0, 0), Placed(GraphNode("b"), 0, 10, 10)
    assert boxes_overlap(Layout(placed={"a": a, "b": b})) == [("a", "b")]
    crossing = Layout(routes={("a", "b"): [(0, 0), (10, 10)], ("c", "d"): [(0, 10), (10, 0)]})
    assert edge_crossings(crossing) == 1
