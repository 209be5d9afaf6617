"""The dependency graph as server-rendered SVG (the catalog's graph page).

No JavaScript library draws anything: the layout is computed here, deterministically (the same catalog
always gives the same picture), and emitted as plain ``<svg>`` markup. Every value that comes from the
catalog is escaped; every colour is repeated as text (a status word, a ``<title>`` tooltip) for people
who cannot tell the colours apart.

The graph is laid out by grandalf's Sugiyama (layered) layout, left to right (:func:`layout`): a node sits in a
layer after every node that depends on it (cycles broken by grandalf's feedback edges, drawn as curves below
the boxes), rows are ordered to reduce crossings, coordinates come from Brandes and Koepf's method, and a long
edge passes the layers it crosses in lanes of its own. Parts of the graph that are not connected are stacked.
:func:`boxes_overlap` and :func:`edge_crossings` measure how readable a layout is (the catalog's tests hold
the picture of 10 services made of 40 processes to no overlap and a bound on crossings).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Protocol

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from grandalf.graphs import Edge as GEdge
from grandalf.graphs import Graph as GGraph
from grandalf.graphs import Vertex
from grandalf.layouts import DummyVertex, SugiyamaLayout

from portal.ui.charts.common import FONT, STATUS_STYLE


class Edge(Protocol):
    """What the picture reads of an edge (the catalog's :class:`~portal.catalog.graph.Edge` is one)."""

    source: str
    target: str
    kind: str  # "service" or "resource"
    declared: bool
    observed: bool
    calls: int

    @property
    def drift(self) -> str | None: ...


RESOURCE_STYLE = ("#e8eef7", "#5c6f8a")
EDGE_COLOURS = {
    "ok": "#555555",
    "declared_not_observed": "#777777",
    "observed_not_declared": "#8e24aa",
    "resource": "#9aa5b1",
    "critical": "#ba2121",
}
DRIFT_LABELS = {
    "declared_not_observed": "declared, never called",
    "observed_not_declared": "called, not declared",
}
IMPACT_COLOUR = "#d9480f"

NODE_W, NODE_H = 190, 56
RESOURCE_H = 44
COLUMN_GAP, ROW_GAP = 90, 28
MARGIN = 20
LANE_H = 16.0  # the room a long edge takes in a column it crosses
LINE_H = 15  # each extra line in a service's box
LEGEND_ROW = 26
MIN_WIDTH = 960


@dataclass(frozen=True)
class GraphNode:
    """A box in the picture: a service (``status`` derived on read) or a declared resource.

    Ids are unique across both kinds: a resource named like a service needs its own id (the pages use
    ``resource:NAME``, with ``NAME`` as its label)."""

    id: str
    kind: str = "service"  # "service" or "resource"
    label: str = ""
    status: str = "unknown"
    registered: bool = True
    url: str = ""
    detail: str = ""  # a short second line: tier, team
    lines: tuple[str, ...] = ()  # more lines inside the box: its processes, the resources it uses


@dataclass(frozen=True)
class Impact:
    """Critical services, the services that depend on one (transitively), and the edges on the way."""

    critical: frozenset[str] = frozenset()
    dependents: frozenset[str] = frozenset()
    edges: frozenset[tuple[str, str]] = frozenset()


@dataclass
class Placed:
    node: GraphNode
    column: int
    x: float = 0.0
    y: float = 0.0  # the top

    @property
    def height(self) -> int:
        return RESOURCE_H if self.node.kind == "resource" else NODE_H + LINE_H * len(self.node.lines)


@dataclass
class Layout:
    """Where every node is, and the way of every edge: points from the source's side through a lane in
    each column it crosses to the target's side (a cycle-closing edge: just its two ends)."""

    placed: dict[str, Placed] = field(default_factory=dict)
    routes: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    back_edges: set[tuple[str, str]] = field(default_factory=set)
    width: int = MIN_WIDTH
    height: int = 0


def _service_edges(nodes: dict[str, GraphNode], edges: Iterable[Edge]) -> list[Edge]:
    return [e for e in edges if e.source in nodes and e.target in nodes]


def impact(nodes: list[GraphNode], edges: list[Edge]) -> Impact:
    """What a critical service takes down with it: every service with a path of dependencies (declared or
    observed) to a critical one, and the edges of those paths."""
    by_id = {n.id: n for n in nodes}
    critical = {n.id for n in nodes if n.kind == "service" and n.status == "critical"}
    reached, on_the_way = _upstream(critical, _callers(by_id, edges))
    return Impact(frozenset(critical), frozenset(reached), frozenset(on_the_way))


def dependents(target: str, nodes: list[GraphNode], edges: list[Edge]) -> list[str]:
    """The services that depend on ``target``, directly or through others (sorted)."""
    reached, _ = _upstream({target}, _callers({n.id: n for n in nodes}, edges))
    return sorted(reached - {target})


def _callers(by_id: dict[str, GraphNode], edges: Iterable[Edge]) -> dict[str, set[str]]:
    callers: dict[str, set[str]] = defaultdict(set)
    for edge in _service_edges(by_id, edges):
        if edge.kind == "service" and edge.source != edge.target:
            callers[edge.target].add(edge.source)
    return callers


def _upstream(start: set[str], callers: dict[str, set[str]]) -> tuple[set[str], set[tuple[str, str]]]:
    reached: set[str] = set()
    on_the_way: set[tuple[str, str]] = set()
    queue = sorted(start)
    while queue:
        target = queue.pop()
        for source in sorted(callers[target]):
            on_the_way.add((source, target))
            if source not in reached:
                reached.add(source)
                queue.append(source)
    return reached, on_the_way


class _View:
    """A vertex's box for grandalf: its size and, once laid out, its centre (``xy``)."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy: tuple[float, float] = (0.0, 0.0)

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.path = points


def layout(nodes: list[GraphNode], edges: list[Edge]) -> Layout:
    """A layered (Sugiyama) layout by grandalf, left to right: each connected part of the graph in layers
    (cycles broken by grandalf's feedback edges), rows ordered to reduce crossings, coordinates by Brandes-Koepf;
    the parts stacked top to bottom, largest first. A long edge passes the layers it crosses through lanes of
    its own (grandalf's dummy vertices)."""
    by_id = {n.id: n for n in nodes}
    ids = sorted(by_id, key=lambda i: (by_id[i].kind != "service", i))
    pairs = sorted(
        {(e.source, e.target) for e in _service_edges(by_id, edges) if e.source != e.target},
    )
    vertices = {i: Vertex(i) for i in ids}
    for i in ids:
        # grandalf lays layers top to bottom: give it each box turned a quarter, and turn the result back
        vertices[i].view = _View(w=_height(by_id[i]), h=NODE_W)
    links = {pair: GEdge(vertices[pair[0]], vertices[pair[1]]) for pair in pairs}
    for link in links.values():
        link.view = _View(0, 0)
    whole = GGraph(list(vertices.values()), list(links.values()))
    parts = sorted(whole.C, key=lambda part: (-len(part.sV), min(v.data for v in part.sV)))

    placed: dict[str, Placed] = {}
    lanes: dict[tuple[str, str], list[tuple[float, float]]] = {}
    back: set[tuple[str, str]] = set()
    top = float(MARGIN)
    right = 0.0
    for part in parts:
        sugiyama = SugiyamaLayout(part)
        sugiyama.xspace, sugiyama.yspace = ROW_GAP, COLUMN_GAP
        sugiyama.init_all(roots=sorted((v for v in part.sV if not v.e_in()), key=lambda v: v.data) or None)
        for ctrl in sugiyama.ctrls.values():
            for dummy in ctrl.values():
                if isinstance(dummy, DummyVertex):
                    dummy.view.w, dummy.view.h = LANE_H, NODE_W
        sugiyama.draw(3)
        members = list(part.sV)
        member_ids = {v.data for v in members}
        low = min(v.view.xy[0] - v.view.w / 2 for v in members)
        dummies = [d for ctrl in sugiyama.ctrls.values() for d in ctrl.values() if isinstance(d, DummyVertex)]
        low = min([low, *(d.view.xy[0] - d.view.w / 2 for d in dummies)])
        high = 0.0
        for v in members:
            (gx, gy), height = v.view.xy, v.view.w
            p = Placed(by_id[v.data], sugiyama.grx[v].rank)
            p.x, p.y = MARGIN + gy - NODE_W / 2, top + (gx - low) - height / 2
            placed[v.data] = p
            high = max(high, p.y + height)
            right = max(right, p.x + NODE_W)
        for (s, t), link in links.items():
            if s not in member_ids:
                continue
            if sugiyama.grx[link.v[0]].rank >= sugiyama.grx[link.v[1]].rank:
                back.add((s, t))
            middle: list[tuple[float, float]] = []
            if link in sugiyama.ctrls:
                ctrl = sugiyama.ctrls[link]
                ranks = sorted(r for r in ctrl if isinstance(ctrl[r], DummyVertex))
                if (s, t) in back:
                    ranks.reverse()
                for r in ranks:
                    gx, gy = ctrl[r].view.xy
                    y = top + (gx - low)
                    middle += [(MARGIN + gy - NODE_W / 2, y), (MARGIN + gy + NODE_W / 2, y)]
                    high = max(high, y)
            lanes[(s, t)] = middle
        top = high + ROW_GAP * 2

    # each node's edges leave and arrive spread over its side, in the order of where they go / come from
    centre = {i: placed[i].y + placed[i].height / 2 for i in placed}
    outs: dict[str, list[tuple[float, str, tuple[str, str]]]] = defaultdict(list)
    ins: dict[str, list[tuple[float, str, tuple[str, str]]]] = defaultdict(list)
    for (s, t), middle in lanes.items():
        if (s, t) in back:
            continue
        outs[s].append((middle[0][1] if middle else centre[t], t, (s, t)))
        ins[t].append((middle[-1][1] if middle else centre[s], s, (s, t)))
    start: dict[tuple[str, str], float] = {}
    end: dict[tuple[str, str], float] = {}
    for ports, sides in ((start, outs), (end, ins)):
        for node, ends in sides.items():
            for rank, (*_, key) in enumerate(sorted(ends)):
                ports[key] = _port(placed[node], rank, len(ends))
    routes: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (s, t), middle in lanes.items():
        a, b = placed[s], placed[t]
        if (s, t) in back:
            routes[(s, t)] = [(a.x + NODE_W / 2, a.y + a.height), (b.x + NODE_W / 2 + 8, b.y + b.height + 2)]
        else:
            routes[(s, t)] = [(a.x + NODE_W, start[(s, t)]), *middle, (b.x - 2, end[(s, t)])]
    width = max(MIN_WIDTH, int(right + MARGIN))
    if right + MARGIN < MIN_WIDTH:  # centre a narrow picture
        shift = (MIN_WIDTH - right - MARGIN) / 2
        for p in placed.values():
            p.x += shift
        routes = {k: [(x + shift, y) for x, y in points] for k, points in routes.items()}
    height = int(top - ROW_GAP * 2 + MARGIN + (60 if back else 0)) if placed else 80
    return Layout(placed=placed, routes=routes, back_edges=back, width=width, height=max(height, 80))


def _height(node: GraphNode) -> float:
    if node.kind == "resource":
        return float(RESOURCE_H)
    return float(NODE_H + LINE_H * len(node.lines))


def _port(p: Placed, rank: int, count: int) -> float:
    """The height on ``p``'s side where its ``rank``-th of ``count`` edges ends (spread over the middle)."""
    if count == 1:
        return p.y + p.height / 2
    span = p.height * 0.6
    return p.y + p.height * 0.2 + span * rank / (count - 1)


def boxes_overlap(where: Layout, *, gap: float = 0.0) -> list[tuple[str, str]]:
    """The pairs of boxes closer than ``gap`` to each other (overlapping ones included): none in a readable
    picture."""
    boxes = sorted(where.placed.values(), key=lambda p: (p.x, p.y))
    found = []
    for index, a in enumerate(boxes):
        for b in boxes[index + 1 :]:
            if b.x >= a.x + NODE_W + gap:
                break
            if a.y < b.y + b.height + gap and b.y < a.y + a.height + gap:
                found.append((a.node.id, b.node.id))
    return found


def edge_crossings(where: Layout) -> int:
    """How many times two edges' drawn ways cross (each way as the polyline through its points; edges that share
    an end are not counted crossing there)."""
    ways = [(key, list(pairwise(points))) for key, points in sorted(where.routes.items()) if len(points) >= 2]
    count = 0
    for index, ((a_key, a_segments)) in enumerate(ways):
        for b_key, b_segments in ways[index + 1 :]:
            if set(a_key) & set(b_key):
                continue
            count += sum(1 for p in a_segments for q in b_segments if _segments_cross(p, q))
    return count


def _segments_cross(p: tuple[tuple[float, float], ...], q: tuple[tuple[float, float], ...]) -> bool:
    (ax, ay), (bx, by) = p
    (cx, cy), (dx, dy) = q

    def side(ox: float, oy: float, px: float, py: float, qx: float, qy: float) -> float:
        return (px - ox) * (qy - oy) - (py - oy) * (qx - ox)

    d1, d2 = side(cx, cy, dx, dy, ax, ay), side(cx, cy, dx, dy, bx, by)
    d3, d4 = side(ax, ay, bx, by, cx, cy), side(ax, ay, bx, by, dx, dy)
    return d1 * d2 < 0 and d3 * d4 < 0


def _edge_style(edge: Edge, impact: Impact) -> tuple[str, str, float, str]:
    """(css class, colour, width, dash) for an edge."""
    if edge.kind == "resource":
        kind, colour, width, dash = "edge-resource", EDGE_COLOURS["resource"], 1.2, ""
    elif edge.drift == "declared_not_observed":
        kind, colour, width, dash = "edge-drift edge-declared-only", EDGE_COLOURS[edge.drift], 1.5, "7 5"
    elif edge.drift == "observed_not_declared":
        kind, colour, width, dash = "edge-drift edge-undeclared", EDGE_COLOURS[edge.drift], 2.2, ""
    else:
        kind, colour, width, dash = "edge-ok", EDGE_COLOURS["ok"], 1.5, ""
    if (edge.source, edge.target) in impact.edges:
        kind, colour, width = f"{kind} edge-to-critical", EDGE_COLOURS["critical"], max(width, 2.5)
    return kind, colour, width, dash


def _edge_title(edge: Edge, impact: Impact) -> str:
    if edge.kind == "resource":
        return f"{edge.source} uses resource {edge.target} (declared)"
    if edge.declared and edge.observed:
        text = f"{edge.source} \u2192 {edge.target}: declared and called ({edge.calls:,} calls)"
    elif edge.declared:
        text = f"{edge.source} \u2192 {edge.target}: DRIFT, declared, never called"
    else:
        text = f"{edge.source} \u2192 {edge.target}: DRIFT, called, not declared ({edge.calls:,} calls)"
    if (edge.source, edge.target) in impact.edges:
        text += "; on the way to a critical service"
    return text


def _marker_id(colour: str) -> str:
    return f"arrow-{colour.lstrip('#')}"


def _edge_path(edge: Edge, points: list[tuple[float, float]], back: bool, source: Placed) -> str:
    if edge.source == edge.target:  # a service calling itself: a small loop on its top right corner
        x, y = source.x + NODE_W - 40, source.y
        return f"M {x:.1f} {y:.1f} C {x:.1f} {y - 34:.1f}, {x + 60:.1f} {y - 20:.1f}, {x + 40:.1f} {y:.1f}"
    (x1, y1), (x2, y2) = points[0], points[-1]
    if back:  # closes a cycle: a curve below the boxes
        dip = 50 + abs(x2 - x1) / 12
        return f"M {x1:.1f} {y1:.1f} C {x1:.1f} {y1 + dip:.1f}, {x2:.1f} {y2 + dip:.1f}, {x2:.1f} {y2:.1f}"
    d = [f"M {x1:.1f} {y1:.1f}"]
    for (ax, ay), (bx, by) in pairwise(points):
        if ay == by:  # through a lane: straight
            d.append(f"L {bx:.1f} {by:.1f}")
        else:
            bend = max((bx - ax) / 2, 20)
            d.append(f"C {ax + bend:.1f} {ay:.1f}, {bx - bend:.1f} {by:.1f}, {bx:.1f} {by:.1f}")
    return " ".join(d)


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "\u2026"


def _node_svg(p: Placed, impact: Impact) -> str:
    node = p.node
    e = escape
    if node.kind == "resource":
        fill, stroke = RESOURCE_STYLE
        title = f"{node.label}: a resource (declared, not health-checked)"
        return (
            f'<g id="resource-{e(_css_id(node.label))}" class="node node-resource" data-id="{e(node.id)}">'
            f"<title>{e(title)}</title>"
            f'<rect x="{p.x:.1f}" y="{p.y:.1f}" width="{NODE_W}" height="{RESOURCE_H}" rx="{RESOURCE_H / 2:.0f}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.2"/>'
            f'<text x="{p.x + NODE_W / 2:.1f}" y="{p.y + 18:.1f}" text-anchor="middle" font-size="12" '
            f'font-weight="600" fill="#24313f">{e(_clip(node.label, 26))}</text>'
            f'<text x="{p.x + NODE_W / 2:.1f}" y="{p.y + 33:.1f}" text-anchor="middle" font-size="10.5" '
            f'fill="#4a5868">resource</text></g>'
        )
    status = node.status if node.status in STATUS_STYLE else "unknown"
    fill, stroke, symbol = STATUS_STYLE[status]
    classes = ["node", "node-service", f"status-{status}"]
    lines = [f"{node.label} ({node.id}): {status}"]
    if not node.registered:
        classes.append("node-unregistered")
        lines.append("not registered in the catalog")
    if node.detail:
        lines.append(node.detail)
    lines += node.lines
    halo = ""
    if node.id in impact.dependents:
        classes.append("node-impacted")
        lines.append("depends on a critical service")
        halo = (
            f'<rect class="impact-outline" x="{p.x - 5:.1f}" y="{p.y - 5:.1f}" width="{NODE_W + 10}" '
            f'height="{p.height + 10}" rx="9" fill="none" stroke="{IMPACT_COLOUR}" stroke-width="3" '
            f'stroke-dasharray="8 4"/>'
        )
    dash = ' stroke-dasharray="5 4"' if not node.registered else ""
    width = 2.5 if status == "critical" else 1.4
    second = f"{symbol} {status}" + (f" \u00b7 {node.detail}" if node.detail else "")
    if not node.registered:
        second = "not registered"
    body = (
        f"<title>{e('; '.join(lines))}</title>{halo}"
        f'<rect x="{p.x:.1f}" y="{p.y:.1f}" width="{NODE_W}" height="{p.height}" rx="6" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="{width}"{dash}/>'
        f'<text x="{p.x + 10:.1f}" y="{p.y + 22:.1f}" font-size="13" font-weight="600" fill="#1f2933">'
        f"{e(_clip(node.label, 24))}</text>"
        f'<text class="node-status" x="{p.x + 10:.1f}" y="{p.y + 41:.1f}" font-size="11" fill="{stroke}">'
        f"{e(_clip(second, 30))}</text>"
        + "".join(
            f'<text class="node-line" x="{p.x + 10:.1f}" y="{p.y + 41 + LINE_H * (k + 1):.1f}" font-size="10.5" '
            f'fill="#4a5868">{e(_clip(line, 32))}</text>'
            for k, line in enumerate(node.lines)
        )
    )
    if node.url:
        body = f'<a href="{e(node.url)}">{body}</a>'
    return (
        f'<g id="node-{e(node.id)}" class="{" ".join(classes)}" data-id="{e(node.id)}" '
        f'data-status="{status}">{body}</g>'
    )


def _css_id(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in value)


def _legend(width: int) -> tuple[str, int]:
    """The key to the picture, wrapped to ``width``; and its height."""
    items: list[tuple[int, str, str]] = []  # (swatch width, swatch markup at x=0, label)
    for status, (fill, stroke, symbol) in STATUS_STYLE.items():
        if status == "warning":  # boxes are services: a warning process makes its service degraded
            continue
        items.append(
            (18, f'<rect width="18" height="14" rx="3" fill="{fill}" stroke="{stroke}"/>', f"{symbol} {status}")
        )
    fill, stroke = RESOURCE_STYLE
    items.append((26, f'<rect width="26" height="14" rx="7" fill="{fill}" stroke="{stroke}"/>', "resource"))
    items.append(
        (
            18,
            f'<rect width="18" height="14" rx="3" fill="none" stroke="{IMPACT_COLOUR}" stroke-width="2.5" '
            f'stroke-dasharray="5 3"/>',
            "depends on a critical service",
        )
    )
    first_edge = len(items)
    for key, dash, label in (
        ("ok", "", "declared and called"),
        ("declared_not_observed", "7 5", "drift: declared, never called"),
        ("observed_not_declared", "", "drift: called, not declared"),
        ("resource", "", "uses a resource"),
        ("critical", "", "on the way to a critical service"),
    ):
        colour = EDGE_COLOURS[key]
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        items.append(
            (
                36,
                f'<line x1="0" y1="7" x2="32" y2="7" stroke="{colour}" stroke-width="2"{dashes} '
                f'marker-end="url(#{_marker_id(colour)})"/>',
                label,
            )
        )
    parts: list[str] = []
    x, row = MARGIN, 0
    for index, (swatch, markup, label) in enumerate(items):
        room = swatch + 8 + int(6.6 * len(label)) + 24
        if x > MARGIN and (x + room > width - MARGIN or index == first_edge):
            x, row = MARGIN, row + 1
        y = 10 + row * LEGEND_ROW
        parts.append(
            f'<g transform="translate({x} {y})">{markup}<text x="{swatch + 6}" y="11.5" font-size="11.5">'
            f"{escape(label)}</text></g>"
        )
        x += room
    height = 10 + (row + 1) * LEGEND_ROW
    markup = (
        f'<g id="legend" fill="#1f2933"><rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" '
        f'stroke="#e0e0e0"/>{"".join(parts)}</g>'
    )
    return markup, height + 8


def graph_svg(nodes: list[GraphNode], edges: list[Edge]) -> SafeString:
    """The dependency graph as an ``<svg>`` element, with a legend, tooltips and the critical paths red."""
    if not nodes:
        return mark_safe("")
    where = layout(nodes, edges)
    hit = impact(nodes, edges)
    legend, legend_height = _legend(where.width)
    markers = "".join(
        f'<marker id="{_marker_id(c)}" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" '
        f'markerWidth="11" markerHeight="11" '
        f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{c}"/></marker>'
        for c in sorted(set(EDGE_COLOURS.values()))
    )
    drawn: list[str] = []
    # drift and critical edges last, so they are drawn over the others
    ordered = sorted(
        _service_edges(where.placed, edges),
        key=lambda e: ((e.source, e.target) in hit.edges, e.drift is not None, e.source, e.target),
    )
    for edge in ordered:
        key = (edge.source, edge.target)
        kind, colour, width, dash = _edge_style(edge, hit)
        path = _edge_path(edge, where.routes.get(key, []), key in where.back_edges, where.placed[edge.source])
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        drift = f' data-drift="{edge.drift}"' if edge.drift else ""
        drawn.append(
            f'<g id="edge-{escape(_css_id(edge.source))}--{escape(_css_id(edge.target))}" class="edge {kind}" '
            f'data-source="{escape(edge.source)}" data-target="{escape(edge.target)}"{drift}>'
            f"<title>{escape(_edge_title(edge, hit))}</title>"
            f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="{width}"{dashes} '
            f'marker-end="url(#{_marker_id(colour)})"/></g>'
        )
    boxes = [_node_svg(where.placed[n.id], hit) for n in sorted(nodes, key=lambda n: n.id)]
    height = where.height + legend_height
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="catalog-graph-svg" role="img" '
        f'aria-labelledby="catalog-graph-title" width="{where.width}" height="{height}" '
        f'viewBox="0 0 {where.width} {height}" style="{FONT}">'
        f'<title id="catalog-graph-title">Dependency graph: {len(nodes)} nodes, {len(ordered)} edges</title>'
        f"<defs>{markers}</defs>{legend}"
        f'<g transform="translate(0 {legend_height})"><g id="edges">{"".join(drawn)}</g>'
        f'<g id="nodes">{"".join(boxes)}</g></g></svg>'
    )
    return mark_safe(svg)  # noqa: S308 - every catalog value in it went through escape()
