"""The chart's command line: ``./bin/atrium chart sync | check | render`` (``make chart-check`` is ``check``).

``sync`` writes the chart's copy of the dependency graph from the catalog manifests; ``check`` runs what CI runs
(drift, render, lint, the Kubernetes and CRD schemas, the policies) over ``values.yaml`` and the two examples, or
over ``-f`` files; ``render`` prints the manifests Helm would apply.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from devtools.chart import (
    CHART_DIR,
    DEPENDENCIES_FILE,
    EXAMPLE_VALUES,
    K8S_VERSIONS,
    NAMESPACE,
    RELEASE,
    REPO_ROOT,
    VENDORED_CRDS,
    dependencies_drift,
    dependencies_sync,
    lint,
    render,
    render_sources,
    validate,
    values_merged,
)
from devtools.chart_policy import policy


def _check(values_sets: Sequence[tuple[str, list[Path]]]) -> int:
    failures = 0
    for problem in dependencies_drift():
        print(f"DRIFT {problem}")
        failures += 1
    for label, files in values_sets:
        try:
            manifests = render(values_files=files)
        except Exception as error:  # the chart refused the values (values.schema.json, a template's `fail`)
            print(f"FAIL [{label}] render: {str(error).strip()}")
            failures += 1
            continue
        problems = [f"lint: {p}" for p in lint(values_files=files)]
        problems += [f"schema: {p}" for p in validate(manifests)]
        problems += [f"policy: {p}" for p in policy(manifests, values_merged(values_files=files))]
        for problem in problems:
            print(f"FAIL [{label}] {problem}")
        failures += len(problems)
        print(
            f"{'ok  ' if not problems else 'FAIL'} [{label}] {len(manifests)} manifests, lint, Kubernetes "
            f"{' and '.join(K8S_VERSIONS)} (strict), {' and '.join(v[0] for v in VENDORED_CRDS.values())} CRDs, "
            f"policies: {len(problems)} problem(s)"
        )
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./bin/atrium chart", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("sync", help="write files/dependencies.yaml from the catalog manifests")
    check = commands.add_parser("check", help="drift, render, lint, validate and policies (default + examples)")
    check.add_argument("-f", "--values", action="append", type=Path, default=None, help="check only these values")
    show = commands.add_parser("render", help="print the rendered manifests")
    show.add_argument("-f", "--values", action="append", type=Path, default=[], help="values file (repeatable)")
    show.add_argument("--release", default=RELEASE)
    show.add_argument("--namespace", default=NAMESPACE)
    args = parser.parse_args(argv)

    if args.command == "sync":
        changed = dependencies_sync()
        print(f"{DEPENDENCIES_FILE.relative_to(REPO_ROOT)} {'written' if changed else 'already in step'}")
        return 0
    if args.command == "render":
        sources = render_sources(values_files=args.values, release=args.release, namespace=args.namespace)
        try:
            for template, manifest in sources:
                sys.stdout.write(f"---\n# Source: {template}\n{yaml.safe_dump(manifest, sort_keys=False)}")
            sys.stdout.flush()
        except BrokenPipeError:  # `… render | head`
            sys.stdout = None  # type: ignore[assignment]  (nothing left to flush at exit)
        return 0
    if args.values:
        return _check([(", ".join(map(str, args.values)), args.values)])
    return _check([("values.yaml", [])] + [(name, [CHART_DIR / name]) for name in EXAMPLE_VALUES])


if __name__ == "__main__":
    sys.exit(main())
