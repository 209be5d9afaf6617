"""What goes into the image, without building it: the runtime requirements agree with the lock, the entrypoint runs
the Procfile's lines, layers are reproducible (fast: not marked slow)."""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from devtools.image import DEV_ONLY, REPO_ROOT, app_files, layer_write, runtime_requirements
from devtools.node import node_version
from devtools.process import process_command
from devtools.supervisor import procfile_read


def test_image_requirements_are_pinned_as_in_requirements_txt():
    # given the lock's direct requirements and the image's
    locked = runtime_requirements(REPO_ROOT / "requirements.txt")
    image = runtime_requirements()

    # then every image line is the lock's line, word for word (same extras, same pin)
    assert image
    assert {name: locked.get(name) for name in image} == image


def test_every_requirement_is_either_in_the_image_or_named_dev_only():
    locked = set(runtime_requirements(REPO_ROOT / "requirements.txt"))
    image = set(runtime_requirements())

    assert not image & DEV_ONLY, "a package cannot be both in the image and dev-only"
    assert locked - image - DEV_ONLY == set(), "new requirement: add it to deploy/image/requirements.txt or DEV_ONLY"
    assert DEV_ONLY - locked == set(), "DEV_ONLY names a package requirements.txt no longer has"


def test_entrypoint_runs_the_procfile_line_binding_every_address_by_default():
    words, env = process_command(["ledger"], {"PATH": "/usr/bin"})

    assert words == ["gunicorn", "services.ledger.wsgi", "--bind", "0.0.0.0:8001"]
    assert env["DJANGO_SETTINGS_MODULE"] == "services.ledger.settings"


def test_entrypoint_keeps_the_environment_s_bind_host_and_port_and_appends_arguments():
    words, env = process_command(
        ["worker_payments", "--concurrency", "4"], {"BIND_HOST": "127.0.0.1", "PAYMENTS_PORT": "9002"}
    )
    assert words == ["celery", "-A", "workers", "worker", "-Q", "payments", "-n", "payments@%h", "--concurrency", "4"]
    assert env["DJANGO_SETTINGS_MODULE"] == "services.payments.settings"

    words, _ = process_command(["payments"], {"BIND_HOST": "127.0.0.1", "PAYMENTS_PORT": "9002"})
    assert words[-1] == "127.0.0.1:9002"


def test_entrypoint_manage_runs_the_service_s_manage_py():
    words, env = process_command(["manage", "ledger", "migrate", "--noinput"], {})

    assert words == [sys.executable, "services/ledger/manage.py", "migrate", "--noinput"]
    assert env["DJANGO_SETTINGS_MODULE"] == "services.ledger.settings"


@pytest.mark.parametrize("argv", [[], ["nosuch"], ["manage", "nosuch", "migrate"], ["manage", "ledger"]])
def test_entrypoint_refuses_what_is_not_a_process_with_the_list(argv):
    with pytest.raises(ValueError, match="worker_payments") as raised:
        process_command(argv, {})
    assert "jobs_monitor" in str(raised.value)


def test_every_procfile_process_resolves():
    for entry in procfile_read(REPO_ROOT / "Procfile"):
        words, _ = process_command([entry.name], {})
        assert words[0] in ("gunicorn", "celery", "python") or Path(words[0]).name == "node", entry.name


def test_entrypoint_runs_the_risk_service_with_a_real_node_24_first_on_path():
    # given an environment whose PATH has no node of its own (as the image's: /opt/venv/bin/node is a Python wrapper)
    words, env = process_command(["risk"], {"PATH": "/usr/sbin:/sbin"})

    # then the node binary itself runs main.ts (a wrapper would not pass the runtime's SIGTERM on), Node 24+, and its
    # directory leads PATH; no Django static files for it
    assert words[1:] == ["services/risk/src/main.ts"]
    node = Path(words[0])
    assert node.name == "node"
    with node.open("rb") as binary:
        assert binary.read(4) == b"\x7fELF"
    assert (node_version(node) or (0,))[0] >= 24
    assert env["PATH"].split(os.pathsep)[0] == str(node.parent)
    assert env["BIND_HOST"] == "0.0.0.0"
    assert "STATIC_ROOT" not in env
    assert "DJANGO_SETTINGS_MODULE" not in env


def test_entrypoint_manage_risk_migrate_runs_migrate_ts_and_refuses_other_commands():
    words, env = process_command(["manage", "risk", "migrate"], {"PATH": "/usr/bin"})
    assert Path(words[0]).name == "node"
    assert words[1:] == ["services/risk/src/migrate.ts"]
    assert "DJANGO_SETTINGS_MODULE" not in env

    with pytest.raises(ValueError, match="risk is a node service: its one command is `migrate`"):
        process_command(["manage", "risk", "shell"], {})


def test_entrypoint_points_static_root_at_the_service_s_collected_files(tmp_path):
    # given an app root with the files collected for the ledger only
    shutil.copy(REPO_ROOT / "Procfile", tmp_path / "Procfile")
    (tmp_path / "static" / "ledger").mkdir(parents=True)

    # then the ledger's processes serve them, the portal's (nothing collected) and an explicit setting keep theirs
    assert process_command(["relay_ledger"], {}, tmp_path)[1]["STATIC_ROOT"] == str(tmp_path / "static" / "ledger")
    assert "STATIC_ROOT" not in process_command(["portal"], {}, tmp_path)[1]
    assert process_command(["ledger"], {"STATIC_ROOT": "/x"}, tmp_path)[1]["STATIC_ROOT"] == "/x"


def test_app_files_are_the_runtime_files_only():
    files = app_files()

    for wanted in ("manage.py", "Procfile", "gunicorn.conf.py", "devtools/process.py", "deploy/image/entrypoint"):
        assert wanted in files
    assert any(f.startswith("services/ledger/migrations/") for f in files)
    assert not [f for f in files if f.startswith(("tests/", "docs/", "bench/", "devtools/image.py", "devtools/up"))]

    # the Node service: its sources, manifest and lock, never its tests nor a host's node_modules (the image gets its
    # production node_modules from npm ci --omit=dev)
    for wanted in ("services/risk/package.json", "services/risk/package-lock.json", "services/risk/manifest.json",
                   "devtools/node.py"):  # fmt: skip
        assert wanted in files
    assert any(f.startswith("services/risk/src/") and f.endswith(".ts") for f in files)
    assert not [f for f in files if f.startswith(("services/risk/test/", "services/risk/node_modules/"))]


def _tree(root: Path, mtime: float, content: bytes = b"print('hi')\n") -> None:
    (root / "app" / "pkg").mkdir(parents=True)
    (root / "app" / "pkg" / "mod.py").write_bytes(content)
    (root / "app" / "pkg" / "same.py").write_bytes(b"x = 1\n")
    os.link(root / "app" / "pkg" / "same.py", root / "app" / "pkg" / "linked.py")
    (root / "app" / "run").symlink_to("pkg/mod.py")
    for path in [*(root / "app").rglob("*"), root / "app"]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def _layer(tmp_path: Path, name: str, mtime: float, content: bytes = b"print('hi')\n"):
    root, blobs = tmp_path / name, tmp_path / f"{name}-blobs"
    blobs.mkdir()
    _tree(root, mtime, content)
    paths = ["app", "app/pkg", "app/pkg/linked.py", "app/pkg/mod.py", "app/pkg/same.py", "app/run"]
    return layer_write(root, paths, blobs, epoch=1_700_000_000), blobs


def test_layers_are_reproducible_with_mtimes_clamped(tmp_path):
    # given the same files written at two different times after the epoch, and once with other content
    first, blobs = _layer(tmp_path, "a", mtime=1_800_000_000)
    second, _ = _layer(tmp_path, "b", mtime=1_900_000_000)
    changed, _ = _layer(tmp_path, "c", mtime=1_800_000_000, content=b"print('bye')\n")
    older, _ = _layer(tmp_path, "d", mtime=1_600_000_000)

    # then the same files give the same digests; other content or an mtime before the epoch (kept) differ
    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)
    assert changed.digest != first.digest
    assert older.digest != first.digest
    with tarfile.open(blobs / first.digest.split(":")[1]) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == ["app", "app/pkg", "app/pkg/linked.py", "app/pkg/mod.py", "app/pkg/same.py", "app/run"]
    assert {m.mtime for m in members.values()} == {1_700_000_000}
    assert members["app/pkg/same.py"].islnk()
    assert members["app/run"].issym()
    assert {m.uname for m in members.values()} == {""}
