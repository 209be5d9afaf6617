"""The catalog's teams page: every team with its services and their statuses."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from django.utils import timezone

from portal.catalog import selectors
from portal.catalog.models import Team
from portal.catalog.pages.common import NO_TEAM, STATUS_ORDER, ServiceRow, service_rows, worst


@dataclass
class TeamBlock:
    team: Team | None  # None: the services no team owns
    rows: list[ServiceRow]

    @property
    def status(self) -> str:
        return worst([r.status for r in self.rows])

    @property
    def counts(self) -> list[tuple[str, int]]:
        found = Counter(r.status for r in self.rows)
        return [(s, found[s]) for s in STATUS_ORDER if found[s]]

    @property
    def anchor(self) -> str:
        return f"team-{self.team.slug}" if self.team else f"team-{NO_TEAM}"


def teams_page(*, now: dt.datetime | None = None) -> list[TeamBlock]:
    """Every team (by name) with its services and their statuses; services without a team last."""
    now = now or timezone.now()
    by_owner: dict[int | None, list[ServiceRow]] = {}
    for row in service_rows(now=now, with_uptime=False):
        by_owner.setdefault(row.service.owner_id, []).append(row)
    blocks = [TeamBlock(team, by_owner.get(team.id, [])) for team in selectors.team_list()]
    if None in by_owner:
        blocks.append(TeamBlock(None, by_owner[None]))
    return blocks
