"""Whether a TCP port can be bound, and who holds it when it cannot."""

from __future__ import annotations

import contextlib
import errno
import socket

import psutil


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding ``host:port`` fails because something else holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does: TIME_WAIT is no owner
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def port_owner(port: int) -> psutil.Process | None:
    """The process listening on ``port`` when this user may see it; of processes sharing the socket, the
    parent that runs the same program (gunicorn's master, not one of its workers)."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                process = psutil.Process(conn.pid)
                parent = process.parent()
                while parent is not None and parent.cmdline() == process.cmdline():
                    process, parent = parent, parent.parent()
                return process
    return None


def port_problem(port: int, host: str = "127.0.0.1") -> str | None:
    """A one-line reason ``port`` cannot be served on, or None when it is free."""
    if not port_taken(port, host):
        return None
    owner = port_owner(port)
    who = ""
    if owner is not None:
        with contextlib.suppress(psutil.Error):
            who = f" (pid {owner.pid}: {' '.join(owner.cmdline())[:120] or owner.name()})"
    return f"port {port} is in use — is another `make up` running?{who}"
