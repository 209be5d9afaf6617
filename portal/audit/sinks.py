"""Where the signed tree heads are kept outside the database: a JSONL file, or an S3-compatible bucket.

``AUDIT_HEADS_SINK`` picks the place:

* ``""`` (the default): the JSONL file at ``AUDIT_HEADS_PATH``, one head per line, appended and fsynced;
* ``file:///abs/path.jsonl``: the same, at that path;
* ``s3://bucket/optional/prefix``: one object per head, ``<prefix>/heads/<tree_size, 20 digits>.json``,
  holding the head as canonical JSON (sorted keys, no whitespace), written with ``If-None-Match: *`` so
  no head is ever overwritten, and under S3 Object Lock when ``AUDIT_HEADS_S3_OBJECT_LOCK_MODE`` is set.

Both refuse to store a second, different head at a tree size they already hold (``HeadConflictError``)
and treat storing the same head again as done, so a delivery may be retried at any time.
"""

from __future__ import annotations

import abc
import datetime as dt
import fcntl
import functools
import json
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from services.kit.logs import get_logger

log = get_logger(__name__)

Head = dict[str, Any]

LOCK_MODES = ("", "GOVERNANCE", "COMPLIANCE")
READ_THREADS = 16  # concurrent GETs when an S3 sink reads every head back
_KEY_SIZE = re.compile(r"heads/(\d{20})\.json\Z")


class HeadConflictError(RuntimeError):
    """The sink already holds a different head at this tree size: one of the two copies is forged."""


def head_bytes(head: Head) -> bytes:
    """The canonical bytes of a head as stored outside the database: sorted keys, no whitespace, UTF-8."""
    return json.dumps(head, sort_keys=True, separators=(",", ":")).encode()


class HeadsSink(abc.ABC):
    """An append-only store of signed heads outside the database."""

    @abc.abstractmethod
    def put(self, head: Head) -> None:
        """Store ``head`` (a dict as from ``heads.head_as_dict``).

        Storing a head identical to the one already held at its tree size is a no-op; a different one
        raises ``HeadConflictError`` and leaves the stored head as it was.
        """

    @abc.abstractmethod
    def read(self) -> list[Head]:
        """Every head held, ordered by tree size (duplicates kept: the verifier wants to see them)."""

    @abc.abstractmethod
    def sizes_after(self, tree_size: int) -> set[int]:
        """The tree sizes held that are greater than ``tree_size`` (cheap when few are)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the heads go, for messages and logs (no credentials)."""


class FileHeadsSink(HeadsSink):
    """A JSONL file, one head per line, appended under an exclusive ``flock`` and fsynced.

    Heads are appended in signing order except when ``heads_sync`` fills a gap, so the file is read from
    its end, backwards, until a line at or below the size looked for.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"file {self.path}"

    def put(self, head: Head) -> None:
        size = int(head["tree_size"])
        data = head_bytes(head)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for held in _parsed(_lines_backward(fd)):
                held_size = int(held.get("tree_size", -1))
                if held_size == size:
                    if head_bytes(held) == data:
                        return
                    log.error("audit.head_conflict", sink=self.describe(), tree_size=size)
                    raise HeadConflictError(f"{self.describe()} already holds a different head at tree size {size}")
                if held_size < size:
                    break
            end = os.lseek(fd, 0, os.SEEK_END)
            # a line cut short by a crash must not swallow this one
            prefix = b"\n" if end and os.pread(fd, 1, end - 1) != b"\n" else b""
            os.write(fd, prefix + data + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock

    def read(self) -> list[Head]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def sizes_after(self, tree_size: int) -> set[int]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return set()
        sizes: set[int] = set()
        try:
            for held in _parsed(_lines_backward(fd)):
                held_size = int(held.get("tree_size", -1))
                if held_size <= tree_size:
                    break
                sizes.add(held_size)
        finally:
            os.close(fd)
        return sizes


def _lines_backward(fd: int, block: int = 64 * 1024) -> Iterator[bytes]:
    """The file's non-empty lines, last first (the last one even if unterminated)."""
    position = os.lseek(fd, 0, os.SEEK_END)
    rest = b""
    while position > 0:
        step = min(block, position)
        position -= step
        chunk = os.pread(fd, step, position) + rest
        lines = chunk.split(b"\n")
        rest = lines[0]  # may continue in the previous block
        for line in reversed(lines[1:]):
            if line.strip():
                yield line
    if rest.strip():
        yield rest


def _parsed(lines: Iterator[bytes]) -> Iterator[Head]:
    """Lines that hold a JSON object; anything else (a torn line) is skipped here and left to the verifier."""
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


class S3HeadsSink(HeadsSink):
    """One object per head in an S3-compatible bucket (AWS, MinIO, Ceph, …), never overwritten.

    Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a
    profile, an instance or pod role). With ``lock_mode`` set, each object is written with that Object
    Lock mode and retained for ``retention_days``; the bucket must have Object Lock enabled.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        lock_mode: str = "",
        retention_days: int = 400,
    ) -> None:
        if lock_mode not in LOCK_MODES:
            raise ImproperlyConfigured(
                f"AUDIT_HEADS_S3_OBJECT_LOCK_MODE must be one of {LOCK_MODES}, not {lock_mode!r}"
            )
        if lock_mode and retention_days < 1:
            raise ImproperlyConfigured("AUDIT_HEADS_S3_RETENTION_DAYS must be at least 1 with Object Lock")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or None
        self.region = region
        self.lock_mode = lock_mode
        self.retention_days = retention_days
        self._client_lock = threading.Lock()
        self._client_instance: Any = None

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"bucket {where}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def key(self, tree_size: int) -> str:
        """The object key of the head at ``tree_size`` (zero-padded, so keys sort as sizes do)."""
        return f"{self.prefix}heads/{tree_size:020d}.json"

    def _client(self) -> Any:
        with self._client_lock:
            if self._client_instance is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=5,
                    read_timeout=10,
                    retries={"max_attempts": 5, "mode": "standard"},
                    max_pool_connections=READ_THREADS,
                )
                self._client_instance = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
                )
            return self._client_instance

    def put(self, head: Head) -> None:
        from botocore.exceptions import ClientError

        size = int(head["tree_size"])
        key, data = self.key(size), head_bytes(head)
        extra: dict[str, Any] = {}
        if self.lock_mode:
            extra["ObjectLockMode"] = self.lock_mode
            extra["ObjectLockRetainUntilDate"] = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retention_days)
        client = self._client()
        try:
            client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/json", IfNoneMatch="*", **extra
            )
            return
        except ClientError as exc:
            if not _already_exists(exc):
                raise
            refused = exc
        try:
            held = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise refused from exc  # a concurrent write still in flight: try again later
            raise
        if held == data:
            log.info("audit.head_already_stored", sink=self.describe(), tree_size=size)
            return
        log.error("audit.head_conflict", sink=self.describe(), tree_size=size, key=key)
        raise HeadConflictError(f"{self.describe()} already holds a different head at tree size {size} ({key})")

    def _keys(self, start_after: str | None = None) -> Iterator[tuple[int, str]]:
        """(tree size, key) of every head object, in key order, optionally only those after a key."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"{self.prefix}heads/"}
        if start_after is not None:
            params["StartAfter"] = start_after
        for page in self._client().get_paginator("list_objects_v2").paginate(**params):
            for item in page.get("Contents", []):
                key = item["Key"]
                match = _KEY_SIZE.search(key)
                if match is None or key != self.key(int(match.group(1))):
                    log.warning("audit.heads_stray_object", sink=self.describe(), key=key)
                    continue
                yield int(match.group(1)), key

    def read(self) -> list[Head]:
        keys = [key for _, key in self._keys()]
        if not keys:
            return []
        client = self._client()

        def fetch(key: str) -> Head:
            body = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            try:
                head = json.loads(body)
            except ValueError as exc:
                raise ValueError(f"{self.describe()}: object {key} is not JSON") from exc
            if not isinstance(head, dict):
                raise ValueError(f"{self.describe()}: object {key} is not a JSON object")
            return head

        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(keys))) as pool:
            return list(pool.map(fetch, keys))  # in key order, that is by tree size

    def sizes_after(self, tree_size: int) -> set[int]:
        start = self.key(tree_size) if tree_size >= 0 else None
        return {size for size, _ in self._keys(start) if size > tree_size}


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _already_exists(exc: Exception) -> bool:
    """Whether a conditional put was refused because the key exists (412), or is being written (409)."""
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412


def sink_from_settings() -> HeadsSink:
    """Build the sink ``AUDIT_HEADS_SINK`` names (see the module docstring)."""
    url = settings.AUDIT_HEADS_SINK.strip()
    if not url:
        return FileHeadsSink(settings.AUDIT_HEADS_PATH)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = unquote(parsed.path)
        if parsed.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ImproperlyConfigured(f"AUDIT_HEADS_SINK: a file sink needs an absolute path (file:///…), not {url}")
        return FileHeadsSink(path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ImproperlyConfigured(f"AUDIT_HEADS_SINK: an S3 sink needs a bucket (s3://bucket/prefix), not {url}")
        return S3HeadsSink(
            parsed.netloc,
            unquote(parsed.path),
            endpoint_url=settings.AUDIT_HEADS_S3_ENDPOINT_URL,
            region=settings.AUDIT_HEADS_S3_REGION,
            lock_mode=settings.AUDIT_HEADS_S3_OBJECT_LOCK_MODE.strip().upper(),
            retention_days=settings.AUDIT_HEADS_S3_RETENTION_DAYS,
        )
    raise ImproperlyConfigured(f"AUDIT_HEADS_SINK must be empty, file:///… or s3://…, not {url}")


@functools.cache
def get_sink() -> HeadsSink:
    """The configured sink, built once per process (``get_sink.cache_clear()`` forgets it)."""
    return sink_from_settings()


@receiver(setting_changed)
def _forget_sink(*, setting: str, **kwargs: Any) -> None:
    """Tests override ``AUDIT_HEADS_*`` settings: build the sink again from the new values."""
    if setting.startswith("AUDIT_HEADS_"):
        get_sink.cache_clear()
