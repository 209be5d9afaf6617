"""HAProxy in front of a fleet's web instances, as a Kubernetes Service (or a service mesh) is in front of its pods.

:func:`haproxy_config` writes one frontend per service (the service's one address, what every other process calls)
and one backend with a server per instance, each health-checked on ``/health/ready``; :class:`HAProxy` runs the
Debian package's ``haproxy`` in the foreground, in a session of its own, and speaks its runtime API (the admin
stats socket): server states (``show stat``) and ``set server … state drain|ready`` (what Kubernetes does when it
takes a pod's address out of a Service's endpoints, and puts it back).

The choices (docs/deploy.md, "Fleet rehearsal", says why):

* checks every ``inter`` (500 ms; ``fastinter`` 200 ms while a server changes state or after a connection
  error), DOWN after ``fall`` 2 failed checks, UP after ``rise`` 2 — a killed instance is out within a second;
* ``observe layer4`` with ``error-limit 1 on-error mark-down``: a connection refused by a server takes it out at
  once (what a mesh's outlier detection does), instead of waiting for the next checks, and the request is retried
  on the other one; the checks put it back (``rise``) when it answers again;
* ``retry-on conn-failure empty-response response-timeout`` with ``option redispatch``: a request whose connection
  was refused or dropped before any answer (a server that just died, or closed an idle keep-alive connection
  as the request arrived) is retried on the other instance. HAProxy retries any method; it is safe here because
  every write Atrium takes is idempotent by contract (``Idempotency-Key`` on payments, the ledger's unique
  references, which the payments service reuses on each attempt). ``tune.bufsize`` holds a whole request (the
  payments service's ledger batches are tens of KB): a request is retried only if it fits in a buffer;
* ``http-reuse safe`` (the default, written out): idle server connections are shared between client
  connections, but a client's first request never goes on a reused one, so it can always be retried;
* ``slowstart 3s``: an instance back from a restart gets its share (and its ``maxconn``) ramped up over 3 s, while
  its code warms up (Kubernetes' ``minReadySeconds`` plays a similar part for a rollout);
* ``balance roundrobin`` (as kube-proxy spreads a Service's connections): not ``leastconn``, which sends every
  retry back to a dead server that still counts as UP, since it holds no connections;
* ``maxconn`` per server = the instance's gunicorn workers x threads: requests beyond what it can serve at once wait
  in HAProxy's queue (``timeout queue``), not in the instance's listen backlog, so its health checks are never
  stuck behind a queue (a busy instance would otherwise fail its readiness check and be taken out, overloading the
  other), and queued requests go to whichever instance frees up first, or to the other one if this one dies.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.processes import process_group_stop

HAPROXY = "/usr/sbin/haproxy"
CHECK_INTER_MS = 500
CHECK_FASTINTER_MS = 200
CHECK_FALL = 2
CHECK_RISE = 2


@dataclass(frozen=True)
class Backend:
    name: str  # the service
    port: int  # the frontend's port: the service's address for everyone else
    servers: dict[str, int]  # instance name → its port
    maxconn: int = 4  # requests one instance serves at once (gunicorn workers x threads); the rest wait in HAProxy


def haproxy_config(backends: list[Backend], socket_path: Path, host: str = "127.0.0.1") -> str:
    """The configuration text (see the module docstring for each choice)."""
    lines = [
        "global",
        f"    stats socket {socket_path} mode 600 level admin",
        "    maxconn 4000",
        "    nbthread 1",
        "    tune.bufsize 262144",
        "",
        "defaults",
        "    mode http",
        "    log stdout format raw local0 err",
        "    option httplog",
        "    option log-separate-errors",  # a request retried, redispatched or failed is logged at err
        "    option dontlog-normal",
        "    timeout connect 1s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout queue 10s",
        "    timeout http-keep-alive 10s",
        "    timeout http-request 10s",
        "    timeout check 2s",
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response response-timeout",
        "    http-reuse safe",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri /health/ready ver HTTP/1.1 hdr Host {host}",
        "    http-check expect status 200",
        f"    default-server check inter {CHECK_INTER_MS}ms fastinter {CHECK_FASTINTER_MS}ms "
        f"downinter {CHECK_INTER_MS}ms fall {CHECK_FALL} rise {CHECK_RISE} "
        "observe layer4 error-limit 1 on-error mark-down slowstart 3s",
        "",
    ]
    for backend in backends:
        lines += [
            f"frontend {backend.name}",
            f"    bind {host}:{backend.port}",
            f"    default_backend {backend.name}_pods",
            "",
            f"backend {backend.name}_pods",
        ]
        lines += [
            f"    server {server} {host}:{port} maxconn {backend.maxconn}" for server, port in backend.servers.items()
        ]
        lines.append("")
    return "\n".join(lines)


class HAProxy:
    """One ``haproxy`` process (its own session) and its runtime API."""

    def __init__(self, backends: list[Backend], directory: Path) -> None:
        self.backends = backends
        self.directory = directory
        # A Unix socket's path is limited to ~107 bytes: a short directory of its own, not the (deep) log directory.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="atrium-haproxy-"))
        self.socket_path = self.socket_dir / "admin.sock"
        self.config_path = directory / "haproxy.cfg"
        self.log_path = directory / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self.config_path.write_text(haproxy_config(self.backends, self.socket_path))
        check = subprocess.run(
            [HAPROXY, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration:\n{check.stdout}{check.stderr}")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while not self.socket_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            process_group_stop(self.proc, 5)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def command(self, text: str) -> str:
        """One runtime API command; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """(backend, server) → its ``show stat`` row (``status`` UP/DOWN/DRAIN/MAINT/…, ``scur`` sessions now, …)."""
        text = self.command("show stat")
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines or not lines[0].startswith("# "):
            return {}
        header = lines[0][2:].split(",")
        rows: dict[tuple[str, str], dict[str, str]] = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            rows[(row.get("pxname", ""), row.get("svname", ""))] = row
        return rows

    COUNTERS = ("wretr", "wredis", "econ", "eresp", "hrsp_5xx", "dreq")
    MAXIMA = ("qmax", "qtime", "ctime", "rtime", "ttime")

    def backend_counters(self) -> dict[str, dict[str, int]]:
        """Service → its backend's cumulative counters (``wretr`` retries, ``wredis`` redispatches, ``econ``
        connection errors, ``eresp`` response errors, ``hrsp_5xx``) and, since the last :meth:`clear_maxima`,
        ``qmax`` (most requests queued at once) and the average ms of the last 1024 requests: ``qtime`` in the
        queue, ``ctime`` connecting, ``rtime`` to the response, ``ttime`` in all."""
        found: dict[str, dict[str, int]] = {}
        for (proxy, server), row in self.stats().items():
            if server == "BACKEND" and proxy.endswith("_pods"):
                found[proxy.removesuffix("_pods")] = {k: int(row.get(k) or 0) for k in self.COUNTERS + self.MAXIMA}
        return found

    def clear_maxima(self) -> None:
        self.command("clear counters")

    def server_status(self, service: str, server: str) -> str:
        """UP, DOWN, DRAIN, MAINT, or with a transition (``UP 1/2``, ``DOWN 1/2``)."""
        with contextlib.suppress(OSError):
            return self.stats().get((f"{service}_pods", server), {}).get("status", "?")
        return "?"

    def server_state(self, service: str, server: str, state: str) -> None:
        """``ready``, ``drain`` (no new requests; health checks go on) or ``maint``."""
        answer = self.command(f"set server {service}_pods/{server} state {state}")
        if answer.strip():
            raise RuntimeError(f"haproxy: set server {service}_pods/{server} state {state}: {answer.strip()}")

    def sessions(self, service: str, server: str) -> int:
        """Requests the server is busy with right now."""
        row = self.stats().get((f"{service}_pods", server), {})
        return int(row.get("scur") or 0)

    def wait_status(self, service: str, server: str, wanted: str, timeout: float) -> float:
        """Poll until the server's status is ``wanted``; seconds it took (TimeoutError otherwise)."""
        began = time.monotonic()
        while True:
            if self.server_status(service, server) == wanted:
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                status = self.server_status(service, server)
                raise TimeoutError(f"haproxy: {service}/{server} is {status}, not {wanted}, after {timeout:.0f} s")
            time.sleep(0.05)
