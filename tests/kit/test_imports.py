"""Dependencies point one way (docs/architecture.md): the import-linter contracts in pyproject.toml hold, and no
modules import each other in a cycle — imports inside functions included (grimp reads every import statement)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("portal", "services", "workers", "devtools", "bench")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every set of modules that import each other, directly or not (the strongly connected components of two or
    more modules), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        # Tarjan's algorithm without recursion: (module, its imports still to visit).
        work: list[tuple[str, Iterable[str]]] = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            for other in imported:
                if other not in index:
                    index[other] = low[other] = counter
                    counter += 1
                    stack.append(other)
                    on_stack.add(other)
                    work.append((other, iter(sorted(graph.find_modules_directly_imported_by(other)))))
                    break
                if other in on_stack:
                    low[module] = min(low[module], index[other])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return sorted(cycles)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)


def test_import_contracts_are_kept(capsys):
    # when the contracts in pyproject.toml are checked against the code (what `make lint` runs)
    configuration.configure()  # what the lint-imports command does first
    kept = lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None, no_logo=True)

    # then none is broken (a failure shows import-linter's report: which import breaks which contract)
    report = capsys.readouterr().out
    assert kept, report
    declared = len(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"])
    assert declared >= 7, declared  # every rule of docs/architecture.md is a contract
    assert f"Contracts: {declared} kept, 0 broken." in report


def test_no_modules_import_each_other_in_a_cycle(graph):
    cycles = import_cycles(graph)
    assert cycles == [], "modules that import each other (directly or through others):\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_the_graph_holds_every_package_and_imports_inside_functions(graph):
    # the checks above would pass vacuously on an empty or partial graph
    assert {"services.kit.outbox", "services.payments.processing", "portal.audit.heads", "workers.celery"} <= (
        graph.modules
    )
    # workers.portal imports portal.catalog.health inside a task function
    assert graph.direct_import_exists(importer="workers.portal", imported="portal.catalog.health")


def test_cycle_finder_finds_cycles_through_several_modules():
    # given a -> b -> c -> a, c -> d -> e -> d, and f -> a
    graph = grimp.ImportGraph()
    edges = [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.d", "p.e"), ("p.e", "p.d")]
    for importer, imported in [*edges, ("p.f", "p.a")]:
        graph.add_import(importer=importer, imported=imported)

    # when cycles are looked for, then both are found, and f (which only imports into one) is in none
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"], ["p.d", "p.e"]]
