"""Helpers for the bounded-input section of ``tests/e2e/test_hostile.py``: raw HTTP over a socket (for what
no client library will send), chunked bodies that count what the server took, problem-document checks for both,
and a scan of a process's log for server errors."""

from __future__ import annotations

import json
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PROBLEM = "application/problem+json"


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(url: str, data: bytes, *, timeout: float = 10.0, half_close: bool = True) -> RawAnswer:
    """Send ``data`` as is to the server at ``url``; read its answer until it closes the connection (or the
    first answer is complete: its Content-Length is honoured)."""
    parsed = urllib.parse.urlsplit(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            head, sep, rest = received.partition(b"\r\n\r\n")
            if sep:
                length = _content_length(head)
                if length is not None and len(rest) >= length:
                    break
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return RawAnswer(int(status_line.split()[1]), headers, body)


def _content_length(head: bytes) -> int | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip())
    return None


def check_problem(status: int, headers: Any, body: bytes, expected_status: int, code: str) -> dict[str, Any]:
    """``(status, headers, body)`` is a problem document with ``expected_status`` and ``code`` tied to its
    request id (headers: any mapping with lower-case or case-insensitive keys)."""
    assert status == expected_status, body[:500]
    assert headers["content-type"] == PROBLEM, body[:500]
    document = json.loads(body)
    assert (document["status"], document["code"]) == (expected_status, code), document
    assert document["type"] == f"urn:atrium:problem:{code}"
    assert document["title"]
    assert document["detail"]
    assert document["request_id"] == headers["x-request-id"]
    return document


class CountedBody:
    """A request body streamed in chunks of ``chunk`` bytes (up to ``total``), counting what was taken."""

    def __init__(self, *, total: int, chunk: int = 64 * 1024, prefix: bytes = b"") -> None:
        self.total = total
        self.chunk = chunk
        self.prefix = prefix
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        if self.prefix:
            self.sent += len(self.prefix)
            yield self.prefix
        while self.sent < self.total:
            piece = b" " * min(self.chunk, self.total - self.sent)
            self.sent += len(piece)
            yield piece


def server_errors(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log records (``AtriumProcess.log_records()``) that say a request failed: a 5xx answer, an error."""
    bad = []
    for record in records:
        if record.get("event") == "http.request" and int(record.get("status", 0)) >= 500:
            bad.append(record)
        elif record.get("level") in ("error", "critical") and "request" in str(record.get("event", "")).lower():
            bad.append(record)
        elif record.get("exc_type") and record.get("logger") in ("django.request", "gunicorn.error"):
            bad.append(record)
    return bad
