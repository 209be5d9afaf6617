"""Services, not processes: every catalog entry names the service it is part of (``part_of``) and its role there
(web, worker, relay, beat, monitor); a *service* is the group of entries with the same ``part_of``.

A service's status, derived on read from its processes' (:func:`~portal.catalog.status.service_status`):

* ``critical`` — its API is down: a web process is ``critical`` (or, for a service without a web process, every
  process is);
* ``degraded`` — one of its processes is down or warning (a worker, the relay, beat ... or a slow API);
* ``passing`` — every process is passing (processes never heard from do not count against it);
* ``unknown`` — nothing heard from any of its processes yet.

Its uptime is its web process's (the API's health checks; a service without one has none).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from portal.catalog.health import Uptime
from portal.catalog.models import Instance, InstanceStatus, Role, Service, Team
from portal.catalog.status import UNKNOWN, instance_status, service_status

DEGRADED = "degraded"
# Worst first.
SERVICE_STATUSES = ("critical", DEGRADED, "passing", UNKNOWN)
ROLE_ORDER = {role: index for index, role in enumerate(Role.values)}


@dataclass
class Process:
    """One catalog entry inside its service, with its status derived on read."""

    entry: Service
    status: str
    instances: list[Instance] = field(default_factory=list)  # not gone, latest heartbeat first
    live: int = 0  # of those, heartbeating

    @property
    def slug(self) -> str:
        return self.entry.slug

    @property
    def role(self) -> str:
        return self.entry.role


@dataclass
class ServiceGroup:
    """A service: its processes by role, its status and why, its owner, its API's uptime."""

    slug: str
    display_name: str
    description: str
    team: Team | None
    tier: int
    lifecycle: str
    processes: list[Process]
    status: str
    reason: str
    uptime: dict[str, Uptime] = field(default_factory=dict)

    @property
    def web(self) -> Service | None:
        """The entry serving its API (the first web process), if any."""
        return next((p.entry for p in self.processes if p.role == Role.WEB), None)

    @property
    def queues(self) -> list[str]:
        return sorted({q for p in self.processes for q in p.entry.queues})

    def by_role(self) -> list[tuple[str, list[Process]]]:
        """``(role, processes)`` in the order web, worker, relay, beat, monitor, other; empty roles left out."""
        roles: dict[str, list[Process]] = defaultdict(list)
        for process in self.processes:
            roles[process.role].append(process)
        return sorted(roles.items(), key=lambda item: ROLE_ORDER.get(item[0], len(ROLE_ORDER)))


def group_status(processes: Iterable[Process]) -> tuple[str, str]:
    """The service's status from its processes' (see the module's docstring), and the reason in words."""
    listed = list(processes)
    web = [p for p in listed if p.role == Role.WEB]
    down = [p.slug for p in listed if p.status == "critical"]
    if any(p.status == "critical" for p in web):
        return "critical", "its API is down (" + ", ".join(p.slug for p in web if p.status == "critical") + ")"
    if not web and listed and len(down) == len(listed):
        return "critical", "every process is down"
    if down:
        return DEGRADED, "down: " + ", ".join(down)
    warning = [p.slug for p in listed if p.status == "warning"]
    if warning:
        return DEGRADED, "warning: " + ", ".join(warning)
    if any(p.status == "passing" for p in listed):
        return "passing", "every process heard from is passing"
    return UNKNOWN, "nothing heard yet"


def _sort_key(process: Process) -> tuple[int, str]:
    return (ROLE_ORDER.get(process.role, len(ROLE_ORDER)), process.slug)


def process_of(entry: Service, *, now: dt.datetime) -> Process:
    """``entry`` (loaded with ``current_instances`` and ``latest_gone``, as
    :func:`~portal.catalog.selectors.services_with_instances` gives them) as a process with its status."""
    current: list[Instance] = entry.current_instances  # type: ignore[attr-defined]
    return Process(
        entry=entry,
        status=service_status(entry, [*current, *entry.latest_gone], now=now),  # type: ignore[attr-defined]
        instances=current,
        live=sum(1 for i in current if instance_status(i, now=now) == InstanceStatus.PASSING),
    )


def groups(
    entries: Iterable[Service], *, now: dt.datetime, uptime: dict[int, dict[str, Uptime]] | None = None
) -> list[ServiceGroup]:
    """The services the ``entries`` (loaded as :func:`process_of` needs) make up, by slug."""
    members: dict[str, list[Process]] = defaultdict(list)
    for entry in entries:
        members[entry.part_of or entry.slug].append(process_of(entry, now=now))
    found = []
    for slug, processes in sorted(members.items()):
        processes.sort(key=_sort_key)
        # What describes the service: its own entry (the slug it is named by), else its API's, else any.
        head = next(
            (p.entry for p in processes if p.slug == slug),
            next((p.entry for p in processes if p.role == Role.WEB), processes[0].entry),
        )
        status, reason = group_status(processes)
        web = next((p.entry for p in processes if p.role == Role.WEB), None)
        found.append(
            ServiceGroup(
                slug=slug,
                display_name=head.display_name if head.slug == slug else slug,
                description=head.description,
                team=head.owner,
                tier=min(p.entry.tier for p in processes),
                lifecycle=head.lifecycle,
                processes=processes,
                status=status,
                reason=reason,
                uptime=(uptime or {}).get(web.id, {}) if web else {},
            )
        )
    return found
