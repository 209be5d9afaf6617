"""Prometheus metrics of the audit sequencer's poison isolation, read at scrape time from the database.

:class:`AuditCollector` (registered on the kit's registry in ``AuditConfig.ready()``, exposed at the portal's
``/metrics``) exports:

- ``atrium_audit_events_parked_total{service}``: events parked in their place (placeholders chained as
  ``audit.event.parked``, see :mod:`portal.audit.parked`) in the live log — archival moving old ones out shows
  as a counter reset;
- ``atrium_audit_events_rejected_total``: items kept aside in ``audit_rejected`` (no place of their own, a
  place another event holds, or refused at the HTTP ingest door: :mod:`portal.audit.intake`; never deleted).

Counted in the database, so every portal process reports the same numbers whichever worker parked the events.
A failure to read never fails the scrape: the family is left out and logged.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from portal.audit.models import AuditEvent, AuditRejected
from portal.audit.parked import PARKED_ACTION
from services.kit.logs import get_logger

log = get_logger(__name__)


def _parked_family() -> CounterMetricFamily:
    return CounterMetricFamily(
        "atrium_audit_events_parked",
        "Audit events the sequencer could not chain, parked in their place as placeholders (live log).",
        labels=["service"],
    )


def _rejected_family() -> CounterMetricFamily:
    return CounterMetricFamily(
        "atrium_audit_events_rejected", "Items the audit sequencer kept aside in audit_rejected (no place to take)."
    )


class AuditCollector(Collector):
    """Parked and rejected audit events, counted in the database at each scrape."""

    def describe(self) -> list[Metric]:
        return [_parked_family(), _rejected_family()]

    def collect(self) -> Iterator[Metric]:
        try:
            parked = dict(
                AuditEvent.objects.filter(action=PARKED_ACTION)
                .order_by()
                .values_list("service")
                .annotate(n=Count("seq"))
            )
            rejected = AuditRejected.objects.count()
        except Exception as exc:  # the database away: never fail the whole scrape for it
            log.warning("audit.metrics_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return
        family = _parked_family()
        for service, count in sorted(parked.items()):
            family.add_metric([service], count)
        yield family
        total = _rejected_family()
        total.add_metric([], rejected)
        yield total
