"""The catalog's teams page: every team with its services (not processes) and their statuses."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from django.utils import timezone

from portal.catalog import selectors
from portal.catalog.models import Team
from portal.catalog.pages.common import NO_TEAM, service_url, worst
from portal.catalog.systems import SERVICE_STATUSES, ServiceGroup


@dataclass(frozen=True)
class TeamServiceRow:
    group: ServiceGroup
    url: str

    @property
    def status(self) -> str:
        return self.group.status

    @property
    def processes(self) -> int:
        return len(self.group.processes)

    @property
    def version(self) -> str:
        return self.group.web.version if self.group.web else ""


@dataclass
class TeamBlock:
    team: Team | None  # None: the services no team owns
    rows: list[TeamServiceRow]

    @property
    def status(self) -> str:
        return worst([r.status for r in self.rows])

    @property
    def counts(self) -> list[tuple[str, int]]:
        found = Counter(r.status for r in self.rows)
        return [(s, found[s]) for s in SERVICE_STATUSES if found[s]]

    @property
    def anchor(self) -> str:
        return f"team-{self.team.slug}" if self.team else f"team-{NO_TEAM}"


def teams_page(*, now: dt.datetime | None = None) -> list[TeamBlock]:
    """Every team (by name) with its services and their statuses; services without a team last."""
    now = now or timezone.now()
    by_owner: dict[int | None, list[TeamServiceRow]] = {}
    for group in selectors.service_groups(now=now, with_uptime=False):
        by_owner.setdefault(group.team.id if group.team else None, []).append(
            TeamServiceRow(group, service_url(group.slug))
        )
    blocks = [TeamBlock(team, by_owner.get(team.id, [])) for team in selectors.team_list()]
    if None in by_owner:
        blocks.append(TeamBlock(None, by_owner[None]))
    return blocks
