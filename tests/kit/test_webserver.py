"""Gunicorn's own answers (requests it refuses before any application code runs) are problem documents with
stable codes, from both kinds of worker the kit gives gunicorn (sync, and gthread when threads > 1).

Real gunicorn processes, a WSGI application without Django, hostile requests over raw sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.infra import REPO_ROOT, free_port, venv_env
from devtools.processes import process_group_stop
from tests.harness import wait_until

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module", params=[1, 4], ids=["sync", "gthread"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """gunicorn with the kit's worker class (``threads`` 1: sync, 4: gthread); its port."""
    threads = request.param
    config = tmp_path_factory.mktemp("gunicorn") / "gunicorn_conf.py"
    config.write_text("")  # not the project's gunicorn.conf.py: this app has no Django to register
    port = free_port()
    log = (config.parent / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "tests.kit.webserver_app:application",
            "--config",
            str(config),
            "--worker-class",
            "services.kit.webserver.ProblemWorker",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            str(threads),
        ],
        cwd=REPO_ROOT,
        env=venv_env(dict(os.environ)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        wait_until(lambda: _answers(port), 30, "gunicorn to listen")
        yield ("gthread" if threads > 1 else "sync"), port
    finally:
        process_group_stop(process, 10)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is; the status, headers (lower-case names) and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _assert_problem(answer: tuple[int, dict[str, str], bytes], status: int, code: str) -> dict:
    got_status, headers, body = answer
    assert got_status == status, body
    assert headers["content-type"] == PROBLEM
    assert int(headers["content-length"]) == len(body)
    document = json.loads(body)
    assert (document["status"], document["code"], document["type"]) == (status, code, f"urn:atrium:problem:{code}")
    assert document["title"]
    assert document["detail"]
    assert document["request_id"] == headers["x-request-id"]
    assert "<html" not in body.decode()
    return document


def test_the_worker_kind_follows_the_thread_count(server):
    kind, port = server

    answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json()

    assert answer["multithread"] is (kind == "gthread")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 65536 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n",
    ],
    ids=["64k-bearer", "9k-header", "150-headers"],
)
def test_header_fields_over_the_limits_are_431_problems(server, request_bytes):
    _, port = server

    _assert_problem(_raw(port, request_bytes), 431, "header_too_large")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: v\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    ],
    ids=[
        "request-line",
        "http-version",
        "method",
        "header-name",
        "obsolete-folding",
        "nul-in-header",
        "content-length",
        "length-and-chunked",
        "chunk-size",
    ],
)
def test_malformed_requests_are_400_problems(server, request_bytes):
    _, port = server

    _assert_problem(_raw(port, request_bytes), 400, "bad_request")


def test_a_request_line_over_the_limit_is_a_414_problem(server):
    _, port = server

    answer = _raw(port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")

    _assert_problem(answer, 414, "uri_too_long")


def test_an_unknown_transfer_coding_is_a_501_problem(server):
    _, port = server

    answer = _raw(port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n")

    _assert_problem(answer, 501, "unsupported_transfer_coding")


def test_well_formed_requests_still_reach_the_application(server):
    # a chunked body, read to its end by the application
    _, port = server

    response = httpx.post(f"http://127.0.0.1:{port}/", content=iter([b"abc", b"defg"]), timeout=5)

    assert response.status_code == 200
    assert response.json()["length"] == 7
