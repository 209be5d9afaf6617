"""``make test``: lint, then every suite under its own process's settings, on real PostgreSQL and Redis.

Each suite is one pytest run with one ``DJANGO_SETTINGS_MODULE`` (a Django process has
exactly one). Arguments are passed to pytest; paths select the suites they belong to.
``ATRIUM_SKIP_SLOW=1`` skips tests marked ``slow`` (fault and load tests); ``ATRIUM_SKIP_DEPLOY=1`` skips those
marked ``deploy`` (building the image, the fleet rehearsal), which CI runs once, in its external pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from devtools.infra import REPO_ROOT, infra_start, venv_env

SUITES: list[tuple[str, str, list[str]]] = [
    ("portal", "portal.settings", ["tests/portal", "tests/audit", "tests/e2e"]),
    ("ledger", "services.ledger.settings", ["tests/kit", "tests/ledger"]),
    ("payments", "services.payments.settings", ["tests/payments"]),
    ("webhooks", "services.webhooks.settings", ["tests/webhooks"]),
    # The deployment artefacts (image, Helm chart) and the fleet rehearsal (deploy/, devtools/fleet.py).
    ("deploy", "portal.settings", ["tests/deploy"]),
]


def _lint() -> bool:
    ruff = str(Path(sys.executable).parent / "ruff")
    ok = True
    for cmd in ([ruff, "check", "."], [ruff, "format", "--check", "."]):
        print(f"atrium test: {' '.join(cmd[1:])}", flush=True)
        ok = subprocess.run(cmd, cwd=REPO_ROOT).returncode == 0 and ok
    return ok


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


def _counts(junit: Path) -> tuple[int, int, int]:
    if not junit.exists():
        return 0, 0, 0
    passed = failed = skipped = 0
    for suite in ET.parse(junit).getroot().iter("testsuite"):  # noqa: S314  (our own pytest output)
        tests = int(suite.get("tests", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        passed += tests - bad - skip
        failed += bad
        skipped += skip
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
            env = venv_env(dict(os.environ))
            env.pop("DATABASE_URL", None)
            env.update(
                ATRIUM_ENV="test",
                ATRIUM_VAR_DIR=str(var_dir),
                ATRIUM_TEST_DATABASE_SERVER=infra.database_url,
                REDIS_URL=infra.redis_url,
                DJANGO_SETTINGS_MODULE=settings_module,
                PYTHONUNBUFFERED="1",
                # The settings' service (the deploy suite runs the portal's settings on a database of its own).
                **{
                    f"{settings_module.split('.')[-2].upper()}_DATABASE_URL": infra.service_database_url(
                        f"atrium_{name}"
                    )
                },
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
