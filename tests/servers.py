"""A real HTTP server on 127.0.0.1 whose answers a test scripts, and the requests it saw."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Seen:
    """One request the server received (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# A reply is (status, headers, body); None closes the connection without answering.
Reply = tuple[int, dict[str, str], bytes] | None
Responder = Callable[[Seen], Reply]


def json_reply(status: int, document: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(document).encode()


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopped server is really gone for every client.
    protocol_version = "HTTP/1.0"
    server: _Server

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(seen)
        reply = owner.respond(seen)
        if reply is None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, headers, payload = reply
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    owner: LocalServer


class LocalServer:
    """Serves ``respond(seen)`` on ``host`` (127.0.0.1) and a free port (or ``port``) in a background thread until
    :meth:`stop`."""

    def __init__(self, respond: Responder, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.respond = respond
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.running = True

    def calls(self, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.requests if path is None or s.path == path]

    def stop(self) -> None:
        """Stop listening: later connections are refused."""
        if self.running:
            self.running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
