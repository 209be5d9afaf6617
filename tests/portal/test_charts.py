"""The SVG charts (portal/ui/charts), without a database: the graph's layout (columns, cycles, lanes,
determinism), what a critical service takes down, escaping, the health chart and the time-series lines."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest

from portal.catalog.graph import Edge
from portal.ui.charts.graph import NODE_W, GraphNode, dependents, graph_svg, impact, layout
from portal.ui.charts.health import HealthBucket, health_chart_svg
from portal.ui.charts.timeseries import SERIES_STYLES, Series, series_chart_svg

SVG = "{http://www.w3.org/2000/svg}"


def node(slug: str, status: str = "passing", **fields) -> GraphNode:
    return GraphNode(slug, "service", slug.title(), status=status, **fields)


def edge(source: str, target: str, *, declared: bool = True, observed: bool = True, kind: str = "service") -> Edge:
    return Edge(source, target, kind, declared=declared, observed=observed, calls=5 if observed else 0)


def parsed(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def by_id(root: ET.Element) -> dict[str, ET.Element]:
    return {e.get("id"): e for e in root.iter() if e.get("id")}


# a small Atrium: webhooks → payments → ledger → portal, payments → portal, webhooks → ledger (skips a column)
NODES = [node("webhooks"), node("payments"), node("ledger"), node("portal")]
EDGES = [
    edge("webhooks", "payments"),
    edge("payments", "ledger"),
    edge("ledger", "portal"),
    edge("payments", "portal"),
    edge("webhooks", "ledger", declared=False),
]


def test_columns_follow_the_longest_path_from_the_services_nothing_depends_on():
    where = layout(NODES, EDGES)

    columns = {slug: p.column for slug, p in where.placed.items()}
    assert columns == {"webhooks": 0, "payments": 1, "ledger": 2, "portal": 3}
    xs = [where.placed[s].x for s in ("webhooks", "payments", "ledger", "portal")]
    assert xs == sorted(xs)
    assert all(b - a >= NODE_W for a, b in pairwise(xs))


def test_an_edge_skipping_columns_passes_them_in_a_lane_of_its_own():
    where = layout(NODES, EDGES)

    route = where.routes[("webhooks", "ledger")]
    assert len(route) == 4  # out of webhooks, into and out of the payments column, into the ledger
    payments = where.placed["payments"]
    lane_y = route[1][1]
    assert route[1][1] == route[2][1]  # straight through the column
    assert not payments.y <= lane_y <= payments.y + payments.height  # beside the payments box, not through it


def test_the_layout_is_deterministic_whatever_the_input_order():
    first = layout(NODES, EDGES)
    second = layout(list(reversed(NODES)), list(reversed(EDGES)))

    assert {k: (p.x, p.y) for k, p in first.placed.items()} == {k: (p.x, p.y) for k, p in second.placed.items()}
    assert graph_svg(NODES, EDGES) == graph_svg(list(reversed(NODES)), list(reversed(EDGES)))


def test_a_cycle_is_laid_out_and_drawn_with_its_closing_edge_below():
    nodes = [node("a"), node("b"), node("c")]
    edges = [edge("a", "b"), edge("b", "c"), edge("c", "a"), edge("b", "b")]

    where = layout(nodes, edges)

    assert {k: p.column for k, p in where.placed.items()} == {"a": 0, "b": 1, "c": 2}
    assert where.back_edges == {("c", "a")}
    root = parsed(graph_svg(nodes, edges))
    assert {"edge-c--a", "edge-b--b", "edge-a--b"} <= set(by_id(root))


def test_a_critical_service_takes_down_everything_that_depends_on_it_transitively():
    nodes = [node("webhooks"), node("payments"), node("ledger", "critical"), node("portal"), node("reporting")]
    edges = [*EDGES, edge("reporting", "portal")]

    hit = impact(nodes, edges)

    assert hit.critical == {"ledger"}
    assert hit.dependents == {"payments", "webhooks"}
    assert hit.edges == {("payments", "ledger"), ("webhooks", "ledger"), ("webhooks", "payments")}
    assert dependents("ledger", nodes, edges) == ["payments", "webhooks"]
    assert dependents("portal", nodes, edges) == ["ledger", "payments", "reporting", "webhooks"]


def test_the_svg_has_a_group_per_node_tooltips_drift_styles_and_the_critical_paths_red():
    nodes = [
        *NODES[:2],
        node("ledger", "critical"),
        NODES[3],
        GraphNode("fraud-engine", "service", "fraud-engine", status="unknown", registered=False),
        GraphNode("resource:postgres", "resource", "postgres", status=""),
    ]
    edges = [
        *EDGES,
        edge("payments", "fraud-engine", observed=False),
        Edge("ledger", "resource:postgres", "resource", declared=True),
    ]

    root = parsed(graph_svg(nodes, edges))
    ids = by_id(root)

    for slug in ("webhooks", "payments", "ledger", "portal", "fraud-engine"):
        assert ids[f"node-{slug}"].get("data-id") == slug
        assert ids[f"node-{slug}"].find(f".//{SVG}title") is not None
    assert "status-critical" in ids["node-ledger"].get("class")
    assert "node-impacted" in ids["node-payments"].get("class")
    assert "node-impacted" in ids["node-webhooks"].get("class")
    assert "node-impacted" not in ids["node-portal"].get("class")
    assert ids["node-payments"].find(f".//{SVG}rect[@class='impact-outline']") is not None
    assert "node-unregistered" in ids["node-fraud-engine"].get("class")
    assert "node-resource" in ids["resource-postgres"].get("class")
    assert "ledger" in ids["node-ledger"].find(f".//{SVG}title").text
    assert "critical" in "".join(ids["node-ledger"].itertext())  # the status as text, not only a colour

    undeclared = ids["edge-webhooks--ledger"]
    assert undeclared.get("data-drift") == "observed_not_declared"
    assert "DRIFT, called, not declared" in undeclared.find(f"{SVG}title").text
    unused = ids["edge-payments--fraud-engine"]
    assert unused.get("data-drift") == "declared_not_observed"
    assert unused.find(f"{SVG}path").get("stroke-dasharray")
    to_critical = ids["edge-payments--ledger"]
    assert "edge-to-critical" in to_critical.get("class")
    assert to_critical.find(f"{SVG}path").get("stroke") == "#ba2121"
    assert "edge-to-critical" not in ids["edge-ledger--portal"].get("class")
    assert ids["edge-ledger--resource-postgres"].get("data-drift") is None
    assert "legend" in ids
    # services link to their pages; an unregistered one has no page
    with_link = graph_svg([node("ledger", url="/admin/catalog/services/ledger/")], [])
    assert '<a href="/admin/catalog/services/ledger/">' in with_link


def test_catalog_text_is_escaped():
    nasty = GraphNode("x", "service", '<script>alert("x")</script>', status="passing", detail="a & b")

    markup = graph_svg([nasty], [])

    assert "<script>" not in markup
    assert "&lt;script&gt;" in markup
    parsed(markup)  # still well-formed XML


def test_no_nodes_no_picture():
    assert graph_svg([], []) == ""
    assert health_chart_svg([]) == ""


def test_the_health_chart_stacks_each_slots_checks_and_marks_empty_slots():
    start = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
    slot = dt.timedelta(minutes=15)
    buckets = [HealthBucket(start + i * slot, start + (i + 1) * slot) for i in range(8)]
    buckets[0].passing, buckets[0].latency_total, buckets[0].latency_count = 60, 600, 60
    buckets[1].passing, buckets[1].critical = 50, 10
    buckets[2].warning, buckets[2].latency_total, buckets[2].latency_count = 3, 3600, 3
    rolled = buckets[3]
    rolled.passing, rolled.hour = 240, start

    markup = health_chart_svg(buckets, label_every=4)
    root = parsed(markup)

    groups = [g for g in root.iter(f"{SVG}g") if "bucket" in (g.get("class") or "")]
    assert [g.get("class") for g in groups] == [
        "bucket bucket-passing",
        "bucket bucket-critical",
        "bucket bucket-warning",
        "bucket bucket-passing",
        *["bucket bucket-empty"] * 4,
    ]
    critical_slot = groups[1]
    heights = [float(r.get("height")) for r in critical_slot.iter(f"{SVG}rect")]
    assert heights[0] == pytest.approx(5 * heights[1], abs=0.1)  # 50 passing over 10 critical
    assert "50 passing, 0 warning, 10 critical" in critical_slot.find(f"{SVG}title").text
    assert "mean latency 1200 ms" in groups[2].find(f"{SVG}title").text
    assert "the hour's roll-up" in groups[3].find(f"{SVG}title").text
    assert "no checks" in groups[4].find(f"{SVG}title").text
    assert root.find(f".//{SVG}polyline[@class='latency']") is not None
    assert "2000 ms" in markup  # the latency axis, rounded up
    assert re.findall(r">(\d\d:\d\d)<", markup) == ["10:00", "11:00", "12:00"]


def test_a_time_series_chart_draws_a_line_per_series_told_apart_by_colour_and_dash():
    start = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
    starts = [start + dt.timedelta(minutes=i) for i in range(4)]
    series = [Series("portal", [1, 2, 0, 5]), Series("<ledger>", [0, 0, 3, 0])]

    markup = series_chart_svg(
        starts, start + dt.timedelta(minutes=4), series, chart_id="tasks-chart", title="Tasks", label_every=2
    )
    root = parsed(markup)

    assert root.get("id") == "tasks-chart"
    lines = root.findall(f".//{SVG}polyline[@class='series']")
    assert [line.get("data-series") for line in lines] == ["portal", "<ledger>"]
    assert [(line.get("stroke"), line.get("stroke-dasharray") or "") for line in lines] == list(SERIES_STYLES[:2])
    assert len(lines[0].get("points").split()) == 4
    legend = [g.find(f"{SVG}text").text for g in root.iter(f"{SVG}g") if g.get("class") == "legend-item"]
    assert legend == ["portal (8)", "<ledger> (3)"]  # with each one's total; the label escaped in the markup
    assert "&lt;ledger&gt;" in markup
    slots = root.findall(f".//{SVG}rect[@class='slot']")
    assert [s.find(f"{SVG}title").text for s in slots][2] == "10:02\u201310:03 UTC: portal 0, <ledger> 3"
    assert series_chart_svg([], start, series, chart_id="x", title="x") == ""
