"""What a running ``make up`` tells the other dev commands: ``<var>/dev/up.json``, written by the runner when its
servers are up, updated as its processes start and stop, removed when it stops.

``manage`` reuses the servers it names and ``status`` reports on it; a record whose runner is gone (killed
without a chance to clean up) counts as no record.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import psutil

from devtools.infra import REPO_ROOT


def var_dir_get() -> Path:
    """``ATRIUM_VAR_DIR`` or ``var/`` in the repository."""
    return Path(os.environ.get("ATRIUM_VAR_DIR") or REPO_ROOT / "var").resolve()


def state_path(var_dir: Path) -> Path:
    return var_dir / "dev" / "up.json"


def state_write(var_dir: Path, state: dict[str, Any]) -> None:
    """Replace the record atomically (readers never see half a file)."""
    path = state_path(var_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(state, indent=2, sort_keys=True))
    scratch.replace(path)


def state_remove(var_dir: Path) -> None:
    """Remove the record if it is this process's."""
    state = state_read(var_dir)
    if state is not None and state.get("pid") == os.getpid():
        state_path(var_dir).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runner_alive(pid: int) -> bool:
    """Whether ``pid`` is still a dev runner (not a later process that got its number)."""
    try:
        return "devtools" in " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return pid_alive(pid)


def state_read(var_dir: Path) -> dict[str, Any] | None:
    """The running ``make up``'s record, or None when none runs from this var directory."""
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(state_path(var_dir).read_text())
        if isinstance(state, dict) and isinstance(state.get("pid"), int) and _runner_alive(state["pid"]):
            return state
    return None
