"""Queues and task routing: a task's name prefix is its queue. The one list of queue names."""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

QUEUES = ("portal", "audit", "ledger", "payments", "webhooks")
# Queue → the service whose settings and database its worker runs with.
QUEUE_SERVICES = {
    "portal": "portal",
    "audit": "portal",
    "ledger": "ledger",
    "payments": "payments",
    "webhooks": "webhooks",
}


def service_queues(service: str) -> list[str]:
    """The queues whose workers run with ``service``'s settings (what its catalog entry lists)."""
    return [queue for queue in QUEUES if QUEUE_SERVICES.get(queue) == service]


TASK_QUEUES = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES)


def route_task(name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **kw: Any) -> dict | None:
    """Route ``<queue>.<task>`` to ``<queue>``; an explicit ``queue=`` option wins."""
    if options.get("queue"):
        return None
    prefix = name.split(".", 1)[0]
    if prefix in QUEUES:
        return {"queue": prefix, "routing_key": prefix}
    return None
