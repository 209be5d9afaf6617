"""Pieces shared by the load tools (``bench/`` and the fleet rehearsal, ``devtools/fleet.py``): a percentile, a
clean broker, funded ledger accounts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ACCOUNTS = 40  # source and destination accounts (random distinct pairs): little lock contention


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def broker_purge(redis_url: str) -> int:
    """Empty Atrium's queues in this Redis database (and the messages taken but not acknowledged). An earlier run
    stopped with audit batches still queued would otherwise feed them, with its own sequence numbers, to this
    run's audit worker. Return how many keys were deleted."""
    import redis

    from services.kit.queues import QUEUES

    client = redis.Redis.from_url(redis_url)
    keys = [k for k in client.scan_iter(count=1000) if k.split(b"\x06\x16")[0].decode(errors="replace") in QUEUES]
    keys += [k for k in (b"unacked", b"unacked_index", b"unacked_mutex") if client.exists(k)]
    if keys:
        client.delete(*keys)
    client.close()
    return len(keys)


def ledger_accounts(url: str, token: str, count: int = ACCOUNTS) -> tuple[list[str], list[str]]:
    """``count`` funded source accounts and ``count`` empty destination accounts in the live ledger at ``url``."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:

        def account(**fields: Any) -> str:
            body = {"name": f"bench-{uuid.uuid4().hex[:6]}", "currency": "EUR", "normal_balance": "credit", **fields}
            response = http.post("/api/v1/accounts", json=body)
            response.raise_for_status()
            return response.json()["id"]

        funding = account(allow_negative=True)
        sources, destinations = [account() for _ in range(count)], [account() for _ in range(count)]
        for source in sources:
            http.post(
                "/api/v1/transactions",
                json={
                    "reference": f"fund-{uuid.uuid4().hex}",
                    "postings": [
                        {"account": funding, "direction": "debit", "amount": 10**15},
                        {"account": source, "direction": "credit", "amount": 10**15},
                    ],
                },
            ).raise_for_status()
    return sources, destinations


def process_cpu() -> dict[int, tuple[int, int, str, float]]:
    """pid → (session id, uid, command name, CPU seconds) of every process, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            uid = entry.stat().st_uid
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[3] is the session id; utime and stime are fields 14 and 15 of the full line
        found[int(entry.name)] = (int(fields[3]), uid, name, (int(fields[11]) + int(fields[12])) / tick)
    return found


def cpu_by_session(sessions: dict[int, str], *, own: str = "orchestrator") -> dict[int, tuple[str, float]]:
    """pid → (part, CPU seconds used so far) of each named part's processes (``sessions``: session id → part),
    of PostgreSQL's and Redis's server processes (whoever started them) and of this process (as ``own``)."""
    found: dict[int, tuple[str, float]] = {}
    for pid, (session, _uid, name, seconds) in process_cpu().items():
        if session in sessions:
            part = sessions[session]
        elif name.startswith(("postgres", "postmaster")):
            part = "postgresql"
        elif name.startswith("redis-server"):
            part = "redis"
        elif pid == os.getpid():
            part = own
        else:
            continue
        found[pid] = (part, seconds)
    return found


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by part between two snapshots (a process that ended in between is not counted)."""
    totals: dict[str, float] = {}
    for pid, (part, seconds) in after.items():
        totals[part] = totals.get(part, 0.0) + seconds - before.get(pid, (part, 0.0))[1]
    return totals


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)
