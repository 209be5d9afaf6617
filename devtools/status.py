"""``./bin/atrium status``: whether ``make up`` runs (from this var directory), each of its processes and their
health, the URLs to open, and where the data lives (the database and Redis URLs a client can use).

Exit status: 0 when everything runs and answers, 1 when ``make up`` runs but a process is down or not ready,
3 when ``make up`` is not running (as ``systemctl status``).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import httpx

from devtools.infra import database_url_with_name
from devtools.ports import port_problem
from devtools.registry import SERVICES, service_ports
from devtools.state import pid_alive, state_read, var_dir_get
from devtools.up import procfile_entries


def _shown(url: str) -> str:
    """``url`` with any password masked (an external server's; the embedded ones have none)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _health(url: str) -> str:
    try:
        response = httpx.get(f"{url}/health/ready", timeout=2)
    except httpx.HTTPError as exc:
        return f"not answering ({type(exc).__name__})"
    return "ready" if response.status_code == 200 else f"not ready (HTTP {response.status_code})"


def main(argv: list[str]) -> int:
    var_dir = var_dir_get()
    state = state_read(var_dir)
    names = [entry.name for entry in procfile_entries()]
    width = max(len(n) for n in names)
    web = {s.name for s in SERVICES}
    out: list[str] = []
    healthy = True
    if state is None:
        out.append(f"make up: not running (var directory {var_dir})")
        out.append("processes:")
        out += [f"  {name:<{width}}  not running" for name in names]
        ports = service_ports(os.environ)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        busy = {name: port_problem(port) for name, port in ports.items()}
        out.append("urls (when it runs):")
        for name, url in urls.items():
            note = f"  — but {busy[name]}" if busy[name] else ""
            out.append(f"  {name:<{width}}  {url}{note}")
        out.append("data:")
        external = os.environ.get("DATABASE_URL")
        if external:
            out.append(f"  postgres  {_shown(external)} (external, DATABASE_URL)")
        else:
            out.append(f"  postgres  not running (embedded, data in {var_dir / 'dev' / 'postgres'})")
        out.append(
            f"  redis     {_shown(os.environ['REDIS_URL'])} (external, REDIS_URL)"
            if os.environ.get("REDIS_URL")
            else f"  redis     not running (embedded, data in {var_dir / 'dev' / 'redis'})"
        )
        out.append("`make up` starts everything; `./bin/atrium manage <process> <command>` starts the servers for one")
        print("\n".join(out))
        return 3

    urls: dict[str, str] = state["urls"]
    pids: dict[str, int] = state.get("processes", {})
    out.append(f"make up: running (pid {state['pid']}, since {state['started_at']}, var directory {state['var_dir']})")
    out.append("processes:")
    for name in names:
        pid = pids.get(name)
        if pid is None or not pid_alive(pid):
            healthy = False
            out.append(f"  {name:<{width}}  down (the supervisor restarts it; see make up's console)")
            continue
        line = f"  {name:<{width}}  running (pid {pid})"
        if name in web:
            health = _health(urls[name])
            healthy = healthy and health == "ready"
            line += f"  {health}"
        out.append(line)
    out.append("urls:")
    out.append(f"  portal    {urls['portal']}/admin/   (API docs {urls['portal']}/api/docs)")
    out.append(f"  catalog   {urls['portal']}/admin/catalog/overview/")
    out += [
        f"  {s.name:<9} {urls[s.name]}/api/docs{'' if s.is_django else '/'}" for s in SERVICES if s.name != "portal"
    ]
    out.append("data:")
    where = f"embedded, data in {var_dir / 'dev' / 'postgres'}" if state["embedded_postgres"] else "external"
    out.append(f"  postgres  ({where})")
    out += [f"    {s.name:<9} {_shown(database_url_with_name(state['database_url'], s.database))}" for s in SERVICES]
    out.append(f"  redis     {_shown(state['redis_url'])} ({'embedded' if state['embedded_redis'] else 'external'})")
    out.append(f"  credentials {state['credentials']}")
    print("\n".join(out))
    return 0 if healthy else 1
