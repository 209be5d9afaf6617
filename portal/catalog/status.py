"""A service's status, derived on read from its instances' heartbeats and its latest health check.

The beat task writes an instance's ``critical`` / ``gone`` mark every few seconds (:func:`instances_mark`,
what history keeps); what a reader is shown does not wait for it: an instance whose last heartbeat is older
than three heartbeat intervals reads ``critical`` at once.

A service is:

* ``critical`` — its latest health check failed, or it has instances and none of them is heartbeating;
* ``warning`` — its latest health check was a warning, or some of its instances stopped heartbeating (one
  that was restarted — a newer instance on its host is heartbeating — does not count);
* ``passing`` — every check and heartbeat it has is fine;
* ``unknown`` — nothing has been heard from it yet (never checked, no instance).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.conf import settings
from django.utils import timezone

from portal.catalog.models import HealthStatus, Instance, InstanceStatus, Service

UNKNOWN = "unknown"
STATUSES = (HealthStatus.PASSING.value, HealthStatus.WARNING.value, HealthStatus.CRITICAL.value, UNKNOWN)


def heartbeat_seconds() -> float:
    return float(getattr(settings, "CATALOG_HEARTBEAT_SECONDS", 10))


def instance_status(instance: Instance, *, now: dt.datetime | None = None) -> str:
    """``passing``, ``critical`` (three heartbeats missed) or ``gone`` (as marked)."""
    if instance.status == InstanceStatus.GONE:
        return InstanceStatus.GONE
    now = now or timezone.now()
    if instance.last_heartbeat < now - dt.timedelta(seconds=3 * heartbeat_seconds()):
        return InstanceStatus.CRITICAL
    return InstanceStatus.PASSING


def service_status(service: Service, instances: Iterable[Instance], *, now: dt.datetime | None = None) -> str:
    """One of :data:`STATUSES`, from the latest health check and the instances' heartbeats."""
    now = now or timezone.now()
    rows = [(i, instance_status(i, now=now)) for i in instances]
    passing = [i for i, state in rows if state == InstanceStatus.PASSING]
    stopped = [i for i, state in rows if state == InstanceStatus.CRITICAL and not replaced(i, passing)]
    if rows and not passing:
        from_instances = HealthStatus.CRITICAL.value
    elif stopped:
        from_instances = HealthStatus.WARNING.value
    elif passing:
        from_instances = HealthStatus.PASSING.value
    else:
        from_instances = UNKNOWN
    from_check = service.health_status or UNKNOWN
    return max((from_instances, from_check), key=_SEVERITY.__getitem__)


def replaced(instance: Instance, passing: Iterable[Instance]) -> bool:
    """Whether ``instance`` was restarted: a passing instance on its host started after its last heartbeat."""
    if not instance.host:
        return False
    return any(p.host == instance.host and p.first_heartbeat > instance.last_heartbeat for p in passing)


# unknown ranks below passing: a service with passing heartbeats and no health URL is passing.
_SEVERITY = {UNKNOWN: 0, HealthStatus.PASSING.value: 1, HealthStatus.WARNING.value: 2, HealthStatus.CRITICAL.value: 3}
