"""Prometheus metrics of every Celery task, read at scrape time from what the job monitor recorded.

:class:`JobsCollector` (registered on the kit's registry in ``JobsConfig.ready()``, exposed at the portal's
``/metrics``) reads :class:`~portal.jobs.models.JobTotal` in one query — counts since the beginning, never pruned,
so the counters only go up — and exports, per service, queue and task name:

- ``atrium_jobs_tasks_total{state}``: tasks that succeeded, failed, were retried, revoked or rejected;
- ``atrium_jobs_task_runtime_seconds``: a histogram of runtimes (succeeded, failed and retried runs);
- ``atrium_jobs_queue_latency_seconds``: a histogram of the wait from published (or due, with an ETA) to started;

and ``atrium_jobs_monitor_parked_total``: tracking entries or events the monitor could not record and parked in
``jobs_deadletter`` (never pruned, so the counter only goes up).

The stored buckets count observations per bucket (:data:`~portal.jobs.recorder.RUNTIME_BOUNDS`, the last one above
every bound); Prometheus wants them cumulative, so they are summed here. It also exports the broker's queue depths
now (``atrium_jobs_queue_depth``; skipped when the broker does not answer) and workers by status
(``atrium_jobs_workers``). A failure to read never fails the scrape: that family is left out and logged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from portal.jobs.models import DeadLetter, JobTotal, Worker, WorkerStatus
from portal.jobs.recorder import LATENCY_BOUNDS, RUNTIME_BOUNDS
from services.kit.logs import get_logger

log = get_logger(__name__)

COUNTED_STATES = ("succeeded", "failed", "retried", "revoked", "rejected")
LABELS = ["service", "queue", "name"]


def cumulative_buckets(counts: Sequence[int], bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Prometheus buckets (``le`` → observations ≤ it, ``+Inf`` last) from per-bucket counts: one count per bound
    and one above them all. Missing counts are zeros; counts past the last bound (bounds were removed) are +Inf's."""
    out, running = [], 0
    for index, bound in enumerate(bounds):
        running += int(counts[index]) if index < len(counts) else 0
        out.append((_le(bound), running))
    running += sum(int(c) for c in counts[len(bounds) :])
    out.append(("+Inf", running))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))


def _tasks_family() -> CounterMetricFamily:
    return CounterMetricFamily(
        "atrium_jobs_tasks", "Task runs that ended, by how they ended.", labels=[*LABELS, "state"]
    )


def _runtime_family() -> HistogramMetricFamily:
    return HistogramMetricFamily(
        "atrium_jobs_task_runtime_seconds", "How long task runs took (succeeded, failed, retried).", labels=LABELS
    )


def _latency_family() -> HistogramMetricFamily:
    return HistogramMetricFamily(
        "atrium_jobs_queue_latency_seconds",
        "How long tasks waited from published (or due) to started (first runs).",
        labels=LABELS,
    )


def _depth_family() -> GaugeMetricFamily:
    return GaugeMetricFamily("atrium_jobs_queue_depth", "Messages waiting in the queue now.", labels=["queue"])


def _workers_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "atrium_jobs_workers", "Celery workers seen, by status (online, offline, lost).", labels=["status"]
    )


def _parked_family() -> CounterMetricFamily:
    return CounterMetricFamily(
        "atrium_jobs_monitor_parked", "Tracking entries or events the job monitor could not record (jobs_deadletter)."
    )


class JobsCollector(Collector):
    """Task counters and histograms from the recorded totals; queue depths and workers now."""

    def describe(self) -> list[Metric]:
        # What registering asks for: the names, without reading the database or the broker at start-up.
        return [
            _tasks_family(),
            _runtime_family(),
            _latency_family(),
            _depth_family(),
            _workers_family(),
            _parked_family(),
        ]

    def collect(self) -> Iterator[Metric]:
        yield from self._totals()
        yield from self._queues()
        yield from self._workers()
        yield from self._parked()

    def _parked(self) -> Iterator[Metric]:
        try:
            count = DeadLetter.objects.count()
        except Exception as exc:
            log.warning("jobs.metrics_failed", part="parked", error=f"{type(exc).__name__}: {exc}"[:300])
            return
        parked = _parked_family()
        parked.add_metric([], count)
        yield parked

    def _totals(self) -> Iterator[Metric]:
        try:
            totals = list(JobTotal.objects.order_by("service", "queue", "name"))
        except Exception as exc:  # the database away (or not allowed here): never fail the whole scrape for it
            log.warning("jobs.metrics_failed", part="totals", error=f"{type(exc).__name__}: {exc}"[:300])
            return
        tasks, runtime, latency = _tasks_family(), _runtime_family(), _latency_family()
        for total in totals:
            labels = [total.service, total.queue, total.name]
            for state in COUNTED_STATES:
                tasks.add_metric([*labels, state], getattr(total, state))
            runtime.add_metric(
                labels, cumulative_buckets(total.runtime_buckets, RUNTIME_BOUNDS), total.runtime_seconds_sum
            )
            latency.add_metric(
                labels, cumulative_buckets(total.latency_buckets, LATENCY_BOUNDS), total.latency_seconds_sum
            )
        yield from (tasks, runtime, latency)

    def _queues(self) -> Iterator[Metric]:
        from portal.jobs.selectors import queues_live

        try:
            queues = queues_live()
        except Exception as exc:  # the broker away: no depths this scrape, the rest still served
            log.warning("jobs.metrics_failed", part="queues", error=f"{type(exc).__name__}: {exc}"[:300])
            return
        depth = _depth_family()
        for queue in queues:
            if queue["depth"] is not None:
                depth.add_metric([queue["name"]], queue["depth"])
        yield depth

    def _workers(self) -> Iterator[Metric]:
        try:
            counts = dict(Worker.objects.order_by().values_list("status").annotate(n=Count("id")))
        except Exception as exc:
            log.warning("jobs.metrics_failed", part="workers", error=f"{type(exc).__name__}: {exc}"[:300])
            return
        workers = _workers_family()
        for status in WorkerStatus.values:
            workers.add_metric([status], counts.get(status, 0))
        yield workers
