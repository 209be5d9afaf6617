"""Signed heads outside the database: the S3 sink against a real S3-compatible HTTP server, and the file sink.

The S3 server is moto's, started on 127.0.0.1 for this module; boto3 talks HTTP to it like to any other
S3-compatible endpoint (MinIO, Ceph). Each test gets its own bucket, created with Object Lock. Heads are
signed for real (``transaction=True``): the put happens after commit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from django.core.exceptions import ImproperlyConfigured
from moto.server import ThreadedMotoServer

from portal.audit import heads as heads_mod
from portal.audit.chain import ingest
from portal.audit.chain_check import verify_log
from portal.audit.heads import (
    head_as_dict,
    head_sign,
    heads_file_append,
    heads_file_read,
    heads_outside_put,
    heads_sync,
)
from portal.audit.models import AuditHead
from portal.audit.sinks import FileHeadsSink, HeadConflictError, S3HeadsSink, get_sink, head_bytes
from tests.audit.test_chain import make_event
from tests.audit.test_verify import build_log, first, rogue

pytestmark = pytest.mark.django_db(transaction=True)

PREFIX = "atrium/prod"
RETENTION_DAYS = 30


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto) on 127.0.0.1, for the whole module."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path, monkeypatch):
    """Test credentials only, no AWS config from the machine, no instance metadata; heads file per test."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    settings.AUDIT_HEADS_SINK = ""
    settings.ATRIUM_OUTBOX_RELAY = "off"
    get_sink.cache_clear()
    yield
    get_sink.cache_clear()


class Bucket:
    """A bucket on the test server, and a client to look at it directly."""

    def __init__(self, endpoint: str, name: str) -> None:
        self.endpoint = endpoint
        self.name = name
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def key(self, tree_size: int) -> str:
        return f"{PREFIX}/heads/{tree_size:020d}.json"

    def keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.name, Prefix=f"{PREFIX}/")
        return [item["Key"] for item in listing.get("Contents", [])]

    def get(self, tree_size: int) -> dict[str, Any]:
        return self.client.get_object(Bucket=self.name, Key=self.key(tree_size))

    def versions(self, tree_size: int) -> list[dict[str, Any]]:
        listing = self.client.list_object_versions(Bucket=self.name, Prefix=self.key(tree_size))
        return listing.get("Versions", [])

    def remove(self, tree_size: int) -> None:
        """Hide a head as an intruder with delete rights could: a delete marker (locked versions stay)."""
        self.client.delete_object(Bucket=self.name, Key=self.key(tree_size))


@pytest.fixture
def bucket(s3_endpoint, settings) -> Bucket:
    """A fresh Object Lock bucket, configured as the heads sink in GOVERNANCE mode."""
    b = Bucket(s3_endpoint, f"heads-{uuid.uuid4().hex[:12]}")
    b.client.create_bucket(Bucket=b.name, ObjectLockEnabledForBucket=True)
    settings.AUDIT_HEADS_SINK = f"s3://{b.name}/{PREFIX}"
    settings.AUDIT_HEADS_S3_ENDPOINT_URL = s3_endpoint
    settings.AUDIT_HEADS_S3_REGION = "us-east-1"
    settings.AUDIT_HEADS_S3_OBJECT_LOCK_MODE = "GOVERNANCE"
    settings.AUDIT_HEADS_S3_RETENTION_DAYS = RETENTION_DAYS
    return b


def sign_events(count: int, start: int = 1) -> AuditHead:
    """Ingest ``count`` more ledger events and sign the tree."""
    ingest([make_event("ledger", n) for n in range(start, start + count)])
    head = head_sign()
    assert head is not None
    return head


# --- the S3 sink ------------------------------------------------------------------------------------------------


def test_a_signed_head_lands_in_the_bucket_as_one_locked_object(bucket):
    # given the S3 sink in GOVERNANCE mode; when ten events are signed
    before = dt.datetime.now(dt.UTC)
    row = sign_events(10)

    # then one object holds the head, under <prefix>/heads/<size, 20 digits>.json, as canonical JSON
    assert bucket.keys() == [f"{PREFIX}/heads/00000000000000000010.json"]
    obj = bucket.get(10)
    body = obj["Body"].read()
    assert body == json.dumps(head_as_dict(row), sort_keys=True, separators=(",", ":")).encode()
    assert json.loads(body) == head_as_dict(row)
    assert obj["ContentType"] == "application/json"

    # and it is retained for the configured days: even its version cannot be deleted
    meta = bucket.client.head_object(Bucket=bucket.name, Key=bucket.key(10))
    assert meta["ObjectLockMode"] == "GOVERNANCE"
    expected = before + dt.timedelta(days=RETENTION_DAYS)
    assert abs(meta["ObjectLockRetainUntilDate"] - expected) < dt.timedelta(minutes=5)
    (version,) = bucket.versions(10)
    with pytest.raises(ClientError, match="AccessDenied"):
        bucket.client.delete_object(Bucket=bucket.name, Key=bucket.key(10), VersionId=version["VersionId"])

    # and the sink reads it back as the database holds it
    assert heads_file_read() == [head_as_dict(row)]


def test_the_same_head_again_is_a_no_op_and_a_different_one_is_refused(bucket):
    # given a head signed and stored
    row = sign_events(5)
    original = bucket.get(5)["Body"].read()

    # when the same head is put again (a retried delivery)
    heads_outside_put(row)
    heads_file_append(row)

    # then nothing changed: still one version, same bytes
    assert len(bucket.versions(5)) == 1
    assert bucket.get(5)["Body"].read() == original

    # when a different head at the same tree size is put
    forged = {**head_as_dict(row), "root_hash": "ab" * 32}
    with pytest.raises(HeadConflictError, match="tree size 5"):
        heads_outside_put(forged)

    # then it is refused and the original object is untouched
    assert len(bucket.versions(5)) == 1
    assert bucket.get(5)["Body"].read() == original


def test_signing_survives_an_unreachable_bucket_and_heads_sync_delivers_later(bucket, settings, caplog):
    # given the sink pointed at a port where nothing listens
    settings.AUDIT_HEADS_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"

    # when ten events are signed
    with caplog.at_level(logging.ERROR, logger="portal.audit.heads"):
        row = sign_events(10)

    # then signing succeeded: the head is in the database, the failure logged, the bucket empty
    assert row.tree_size == 10
    assert AuditHead.objects.filter(tree_size=10).exists()
    assert "audit.head_put_failed" in [r.getMessage() for r in caplog.records]
    assert bucket.keys() == []

    # when the bucket is back and heads are synced
    settings.AUDIT_HEADS_S3_ENDPOINT_URL = bucket.endpoint
    delivered = heads_sync()

    # then the missed head is there, and a second sync has nothing to do
    assert delivered == 1
    assert bucket.get(10)["Body"].read() == head_bytes(head_as_dict(row))
    assert heads_sync() == 0


def test_the_next_signing_delivers_a_head_the_bucket_missed(bucket):
    # given a head at 10 whose object went missing (its put failed, say)
    sign_events(10)
    bucket.remove(10)
    assert bucket.keys() == []

    # when the log grows and is signed again
    sign_events(5, start=11)

    # then both heads are in the bucket: signing synced first
    assert bucket.keys() == [bucket.key(10), bucket.key(15)]


def test_an_ordinary_sync_looks_at_recent_heads_and_a_full_one_at_all(bucket, monkeypatch):
    # given heads at 5, 10 and 15, the objects of 5 and 10 gone, and a sync window of one head
    for start in (1, 6, 11):
        sign_events(5, start=start)
    bucket.remove(5)
    bucket.remove(10)
    monkeypatch.setattr(heads_mod, "SYNC_WINDOW", 1)

    # when synced ordinarily: the newest head is in place, nothing to do
    assert heads_sync() == 0

    # when synced fully: both missing heads are put back
    assert heads_sync(full=True) == 2
    assert bucket.keys() == [bucket.key(5), bucket.key(10), bucket.key(15)]

    # and when the oldest head of the window is itself missing, an ordinary sync compares everything
    bucket.remove(5)
    bucket.remove(15)
    assert heads_sync() == 2
    assert bucket.keys() == [bucket.key(5), bucket.key(10), bucket.key(15)]


def test_a_head_forged_in_the_database_is_not_copied_out(bucket):
    # given a signed head at 10 in the bucket, and a head at 20 slipped into the database with a copied signature
    sign_events(10)
    rogue(
        "INSERT INTO audit_head (tree_size, root_hash, last_hash, timestamp, signature, key_id, created_at) "
        "SELECT 20, %s, last_hash, timestamp, signature, key_id, created_at FROM audit_head WHERE tree_size = 10",
        ["ab" * 32],
    )

    # when synced; then the forgery is refused, and the bucket keeps only the real head
    with pytest.raises(ValueError, match="tree size 20 has an invalid signature"):
        heads_sync()
    assert bucket.keys() == [bucket.key(10)]


def test_verify_passes_with_the_bucket_and_finds_a_head_removed_from_it(bucket):
    # given a log with heads at 10 and 30, stored in the bucket
    build_log()
    assert bucket.keys() == [bucket.key(10), bucket.key(30)]

    # when verified; then all is well
    report = verify_log()
    assert report.ok, report.problems
    assert report.heads == 2

    # when the head at 10 is removed from the bucket
    bucket.remove(10)
    report = verify_log()

    # then verification reports it missing
    assert first(report) == (10, "head missing")


def test_the_sink_reads_many_heads_back_in_tree_size_order(bucket):
    # given heads put out of order, at sizes whose decimal order is not their numeric order
    sink = get_sink()
    row = sign_events(3)
    base = head_as_dict(row)
    for size in (40, 7, 1000, 12, 3, 25):
        sink.put({**base, "tree_size": size})

    # when read back; then in tree size order, and sizes_after sees only the larger ones
    assert [h["tree_size"] for h in sink.read()] == [3, 7, 12, 25, 40, 1000]
    assert sink.sizes_after(12) == {25, 40, 1000}
    assert sink.sizes_after(-1) == {3, 7, 12, 25, 40, 1000}


# --- configuration ----------------------------------------------------------------------------------------------


def test_the_sink_follows_the_settings(settings, tmp_path):
    # the default: the file at AUDIT_HEADS_PATH
    assert isinstance(get_sink(), FileHeadsSink)
    assert get_sink().describe() == f"file {tmp_path / 'heads.jsonl'}"

    # a file URL
    settings.AUDIT_HEADS_SINK = f"file://{tmp_path}/other.jsonl"
    assert get_sink().describe() == f"file {tmp_path / 'other.jsonl'}"

    # a bucket with a prefix, trailing slash or not
    settings.AUDIT_HEADS_SINK = "s3://audit-heads/prod/eu/"
    settings.AUDIT_HEADS_S3_OBJECT_LOCK_MODE = "compliance"
    sink = get_sink()
    assert isinstance(sink, S3HeadsSink)
    assert (sink.bucket, sink.lock_mode) == ("audit-heads", "COMPLIANCE")
    assert sink.key(42) == "prod/eu/heads/00000000000000000042.json"
    assert S3HeadsSink("b").key(1) == "heads/00000000000000000001.json"


@pytest.mark.parametrize(
    ("url", "lock_mode"),
    [("ftp://host/heads", ""), ("file://relative/heads.jsonl", ""), ("s3:///no-bucket", ""), ("s3://b", "FOREVER")],
)
def test_a_bad_sink_setting_is_refused(settings, url, lock_mode):
    settings.AUDIT_HEADS_SINK = url
    settings.AUDIT_HEADS_S3_OBJECT_LOCK_MODE = lock_mode
    with pytest.raises(ImproperlyConfigured):
        get_sink()


# --- the file sink ----------------------------------------------------------------------------------------------


def test_the_file_sink_appends_once_and_refuses_a_different_head(settings, tmp_path):
    # given the file sink, by URL, and two signed heads
    path = tmp_path / "by-url" / "heads.jsonl"
    settings.AUDIT_HEADS_SINK = f"file://{path}"
    first_row = sign_events(4)
    second_row = sign_events(4, start=5)

    # then each is one canonical line, in order
    lines = path.read_bytes().splitlines()
    assert lines == [head_bytes(head_as_dict(first_row)), head_bytes(head_as_dict(second_row))]

    # when the first is put again it is not appended; a different head at its size is refused
    heads_outside_put(first_row)
    with pytest.raises(HeadConflictError):
        heads_outside_put({**head_as_dict(first_row), "timestamp": "2030-01-01T00:00:00.000000Z"})
    assert path.read_bytes().splitlines() == lines
    assert heads_file_read() == [head_as_dict(first_row), head_as_dict(second_row)]


def test_the_file_sink_syncs_a_missing_line_and_survives_a_torn_one(settings):
    # given two heads, the file then losing the first line and ending in a torn one
    first_row = sign_events(4)
    second_row = sign_events(4, start=5)
    path = settings.AUDIT_HEADS_PATH
    with open(path, "wb") as handle:
        handle.write(head_bytes(head_as_dict(second_row)) + b"\n" + b'{"tree_size": 9, "roo')

    # when synced: the missing head is appended on a line of its own
    assert heads_sync(full=True) == 1
    with open(path, "rb") as handle:
        lines = handle.read().splitlines()
    assert lines[0] == head_bytes(head_as_dict(second_row))
    assert lines[-1] == head_bytes(head_as_dict(first_row))
    assert get_sink().sizes_after(0) == {4, 8}
    assert heads_sync(full=True) == 0
