"""``make test``: lint, then every suite under its own process's settings, on real PostgreSQL and Redis.

Each suite is one pytest run with one ``DJANGO_SETTINGS_MODULE`` (a Django process has
exactly one). Arguments are passed to pytest; paths select the suites they belong to.
``ATRIUM_SKIP_SLOW=1`` skips tests marked ``slow`` (fault and load tests); ``ATRIUM_SKIP_DEPLOY=1`` skips those
marked ``deploy`` (building the image, the fleet rehearsal), which CI runs once, in its external pass.

A Node service's suite (``risk``) is its own ``npm test`` (``node --test``) after ``npm ci`` when its lock changed,
on a database of its own created afresh (``<TEST_DATABASE_NAME>_risk``, else ``atrium_risk_test``), with a JUnit
report counted in the totals; ``ATRIUM_SKIP_SLOW`` reaches its tests as an environment variable. Lint runs the
Node services' ``tsc --noEmit`` too.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from devtools.infra import REPO_ROOT, Infra, database_create, database_drop, infra_start, venv_env
from devtools.node import node_env, node_path, npm_argv, npm_ci
from devtools.registry import SERVICES, Service

NODE = "node"  # a suite's "settings" when it is a Node service's own test suite (its directory's test/)

SUITES: list[tuple[str, str, list[str]]] = [
    ("portal", "portal.settings", ["tests/portal", "tests/audit", "tests/e2e"]),
    ("ledger", "services.ledger.settings", ["tests/kit", "tests/ledger"]),
    ("payments", "services.payments.settings", ["tests/payments"]),
    *((s.name, NODE, [s.directory]) for s in SERVICES if s.runtime == "node"),
    ("webhooks", "services.webhooks.settings", ["tests/webhooks"]),
    # The deployment artefacts (image, Helm chart) and the fleet rehearsal (deploy/, devtools/fleet.py).
    ("deploy", "portal.settings", ["tests/deploy"]),
]


def _service(settings_module: str) -> str:
    """The service whose settings a suite runs (``services.ledger.settings`` → ``ledger``)."""
    parts = settings_module.split(".")
    return parts[1] if parts[0] == "services" else parts[0]


def tsc_check(service: Service, env: dict[str, str]) -> bool:
    """``tsc --noEmit -p <directory>`` of a Node service (after ``npm ci`` if its lock changed): its types check."""
    npm_ci(REPO_ROOT / service.directory, env=env)
    tsc = REPO_ROOT / service.directory / "node_modules" / "typescript" / "bin" / "tsc"
    cmd = [str(node_path(env)), str(tsc), "--noEmit", "-p", service.directory]
    print(f"atrium test: tsc --noEmit -p {service.directory}", flush=True)
    return subprocess.run(cmd, cwd=REPO_ROOT, env=node_env(env)).returncode == 0


def _lint() -> bool:
    ruff = str(Path(sys.executable).parent / "ruff")
    ok = True
    for cmd in ([ruff, "check", "."], [ruff, "format", "--check", "."]):
        print(f"atrium test: {' '.join(cmd[1:])}", flush=True)
        ok = subprocess.run(cmd, cwd=REPO_ROOT).returncode == 0 and ok
    return lint_node() and ok


def lint_node() -> bool:
    """Every Node service's ``tsc --noEmit`` (``make lint`` runs it too)."""
    results = [tsc_check(service, dict(os.environ)) for service in SERVICES if service.runtime == "node"]
    return all(results)


def node_test_argv(package_dir: Path, node: Path, junit: Path) -> list[str]:
    """The package's ``npm test`` (``node --test ...``) with a spec report on stdout and a JUnit one in ``junit``
    (npm itself when its test script is not a ``node --test`` line: then there is no JUnit report)."""
    script = json.loads((package_dir / "package.json").read_text()).get("scripts", {}).get("test", "")
    words = shlex.split(script)
    if words[:1] != ["node"] or "--test" not in words:
        return [*npm_argv(node), "test"]
    at = words.index("--test") + 1
    reporters = ["--test-reporter=spec", "--test-reporter-destination=stdout", "--test-reporter=junit",
                 f"--test-reporter-destination={junit}"]  # fmt: skip
    return [str(node), *words[1:at], *reporters, *words[at:]]


def node_suite(service: Service, infra: Infra, env: dict[str, str], junit: Path) -> int:
    """A Node service's own tests on a fresh database of their own; the exit status."""
    package_dir = REPO_ROOT / service.directory
    try:
        npm_ci(package_dir, env=env)
    except subprocess.CalledProcessError as exc:
        print(f"atrium test: npm ci in {service.directory} failed ({exc.returncode})", flush=True)
        return exc.returncode or 1
    explicit = os.environ.get("TEST_DATABASE_NAME")
    database = f"{explicit}_{service.name}" if explicit else f"{service.database}_test"
    database_drop(infra.database_url, database)
    database_create(infra.database_url, database)
    url = infra.service_database_url(database)
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host")
    if socket_dir and not parts.hostname:
        # The embedded server's libpq form, postgresql://postgres@/db?host=/socket/dir, has an empty authority that
        # WHATWG URL parsers (Node's `new URL`) refuse; with a placeholder host it is the same libpq URL (host= in the
        # query wins, in node-postgres too) and parses everywhere. PGHOST/PGDATABASE say it to any other client.
        url = urlunsplit((parts.scheme, parts.netloc + "localhost", parts.path, parts.query, parts.fragment))
        env = {**env, "PGHOST": socket_dir[0], "PGDATABASE": database, "PGUSER": parts.username or "postgres"}
    env = node_env({**env, service.database_url_var: url})
    cmd = node_test_argv(package_dir, node_path(env), junit)
    print(f"\natrium test: suite {service.name} (node, database {database}): {' '.join(cmd[1:])}", flush=True)
    try:
        return subprocess.run(cmd, env=env, cwd=package_dir).returncode
    finally:
        database_drop(infra.database_url, database)


def _select(args: list[str]) -> list[tuple[str, str, list[str], list[str]]]:
    """Split args into per-suite paths and shared pytest options."""
    paths = [a for a in args if not a.startswith("-") and (REPO_ROOT / a.split("::")[0]).exists()]
    options = [a for a in args if a not in paths]
    selected = []
    for name, settings_module, roots in SUITES:
        if paths:
            mine = [p for p in paths if any(p.startswith(root) for root in roots)]
            if mine:
                selected.append((name, settings_module, mine, options))
        else:
            selected.append((name, settings_module, [r for r in roots if (REPO_ROOT / r).exists()], options))
    return selected


def _counts(junit: Path, *, cases: bool = False) -> tuple[int, int, int]:
    """Passed, failed and skipped in a JUnit report: pytest's by its suites' counts, node's (``cases``) by its
    ``testcase`` elements."""
    if not junit.exists():
        return 0, 0, 0
    root = ET.parse(junit).getroot()  # noqa: S314  (our own test runners' output)
    if cases:
        return _counts_cases(root)
    passed = failed = skipped = 0
    for suite in root.iter("testsuite"):
        tests = int(suite.get("tests", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        passed += tests - bad - skip
        failed += bad
        skipped += skip
    return passed, failed, skipped


def _counts_cases(root: ET.Element) -> tuple[int, int, int]:
    """Passed, failed and skipped ``testcase`` elements (node's JUnit report: tests with subtests are suites)."""
    passed = failed = skipped = 0
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main(args: list[str]) -> int:
    started = time.monotonic()
    lint_ok = "--no-lint" in args or _lint()
    args = [a for a in args if a != "--no-lint"]
    var_dir = REPO_ROOT / "var" / "test"
    var_dir.mkdir(parents=True, exist_ok=True)
    infra = infra_start("test")
    print(
        f"atrium test: postgres {'embedded' if infra.embedded_postgres else 'external'}, "
        f"redis {'embedded' if infra.embedded_redis else 'external'} ({infra.redis_url})",
        flush=True,
    )
    results: list[tuple[str, int]] = []
    totals = [0, 0, 0]
    try:
        for name, settings_module, paths, options in _select(args):
            if settings_module == NODE:
                junit = var_dir / f"junit-{name}.xml"
                junit.unlink(missing_ok=True)
                env = venv_env(dict(os.environ))
                env.pop("DATABASE_URL", None)
                env.update(ATRIUM_ENV="test", ATRIUM_VAR_DIR=str(var_dir), REDIS_URL=infra.redis_url)
                code = node_suite(next(s for s in SERVICES if s.name == name), infra, env, junit)
                results.append((name, code))
                for i, value in enumerate(_counts(junit, cases=True)):
                    totals[i] += value
                continue
            env = venv_env(dict(os.environ))
            env.pop("DATABASE_URL", None)
            env.update(
                ATRIUM_ENV="test",
                ATRIUM_VAR_DIR=str(var_dir),
                ATRIUM_TEST_DATABASE_SERVER=infra.database_url,
                REDIS_URL=infra.redis_url,
                DJANGO_SETTINGS_MODULE=settings_module,
                PYTHONUNBUFFERED="1",
                # The suite's own database, under the name its settings read (the deploy suite runs the portal's).
                **{f"{_service(settings_module).upper()}_DATABASE_URL": infra.service_database_url(f"atrium_{name}")},
            )
            # Tests run their services on loopback: the outbound guard may reach it (a test can still say otherwise).
            env.setdefault("ATRIUM_OUTBOUND_ALLOW_NETWORKS", "127.0.0.1/32")
            skipped_marks = [
                m for m, var in (("slow", "ATRIUM_SKIP_SLOW"), ("deploy", "ATRIUM_SKIP_DEPLOY")) if os.environ.get(var)
            ]
            if skipped_marks:
                options = [*options, "-m", " and ".join(f"not {m}" for m in skipped_marks)]
            junit = var_dir / f"junit-{name}.xml"
            junit.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "pytest", f"--ds={settings_module}", f"--junitxml={junit}", *options, *paths]
            print(f"\natrium test: suite {name} ({settings_module}): {' '.join(cmd[3:])}", flush=True)
            code = subprocess.run(cmd, env=env, cwd=REPO_ROOT).returncode
            results.append((name, code))
            for i, value in enumerate(_counts(junit)):
                totals[i] += value
    finally:
        infra.stop()
    print("\natrium test: " + ", ".join(f"{n}={'ok' if c == 0 else f'exit {c}'}" for n, c in results), flush=True)
    print(f"atrium test: lint {'ok' if lint_ok else 'FAILED'}; {time.monotonic() - started:.0f} s", flush=True)
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped", flush=True)
    if not results:
        print("atrium test: no suite matched the given paths", file=sys.stderr)
        return 2
    return 0 if lint_ok and all(code == 0 for _, code in results) else 1
