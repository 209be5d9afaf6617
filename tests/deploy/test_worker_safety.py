"""The worker settings that make scaling workers on queue depth safe (docs/deploy.md, "Worker safety").

A worker may be stopped at any moment — KEDA scales it in, a rollout replaces it, a node drains — so:
one message reserved per process (prefetch 1), acknowledged only after the task ran (late acks, requeued if the
process dies), every task bounded by a hard time limit, the Kubernetes termination grace longer than that limit
(a warm shutdown finishes the running task), and Redis's visibility timeout longer than any task may hold its
message (else Redis hands it to a second worker while the first still runs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import cache
from typing import Any

import pytest
from celery.result import AsyncResult
from django.conf import settings

from devtools.infra import REPO_ROOT
from services.kit.queues import QUEUE_SERVICES, QUEUES
from tests.harness import base_env, current_test_database_url, database_server_url, wait_until
from workers.celery import app

SERVICES = ("portal", "ledger", "payments", "webhooks")
# The margin a worker needs besides its longest task: stop consuming, wait for the pool, say goodbye to the broker.
GRACE_MARGIN = 10

# Run in each service's own settings (its CELERY_IMPORTS): every task it registers, with the limits it runs under.
_LIMITS_SCRIPT = """
import json
import django
django.setup()
from workers.celery import app
app.loader.import_default_modules()
conf = app.conf
tasks = {}
for name, task in app.tasks.items():
    if name.startswith("celery."):
        continue
    tasks[name] = {
        "time_limit": task.time_limit or conf.task_time_limit,
        "soft_time_limit": task.soft_time_limit or conf.task_soft_time_limit,
        "countdown_max": (task.retry_backoff_max or 0) if getattr(task, "autoretry_for", ()) else 0,
        "acks_late": task.acks_late,
        "reject_on_worker_lost": task.reject_on_worker_lost,
    }
print(json.dumps({
    "prefetch": conf.worker_prefetch_multiplier,
    "acks_late": conf.task_acks_late,
    "reject_on_worker_lost": conf.task_reject_on_worker_lost,
    "visibility_timeout": conf.broker_transport_options.get("visibility_timeout"),
    "tasks": tasks,
}))
"""


@cache
def service_celery(service: str, **env: str) -> dict[str, Any]:
    """The Celery configuration and registered tasks of ``service``'s worker, as its process sees them."""
    url = f"{database_server_url().rsplit('/', 1)[0]}/unused"  # settings need a URL; nothing connects
    done = subprocess.run(
        [sys.executable, "-c", _LIMITS_SCRIPT],
        env=base_env(service, url, **env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def queue_hard_limits(**env: str) -> dict[str, int]:
    """Each queue's longest hard time limit, over the tasks its worker registers (a task's queue is its prefix)."""
    limits: dict[str, int] = {}
    for queue in QUEUES:
        tasks = service_celery(QUEUE_SERVICES[queue], **env)["tasks"]
        limits[queue] = max(t["time_limit"] for name, t in tasks.items() if name.split(".", 1)[0] == queue)
    return limits


def visibility_shortfalls(config: dict[str, Any]) -> list[str]:
    """Tasks that may hold their message longer than the visibility timeout: run time, plus a retry's countdown (a
    message with an ETA waits, reserved and unacknowledged, in the worker that received it)."""
    visibility = config["visibility_timeout"]
    return [
        f"{name}: {t['time_limit']} s + countdown {t['countdown_max']} s >= visibility timeout {visibility} s"
        for name, t in sorted(config["tasks"].items())
        if t["time_limit"] + t["countdown_max"] >= visibility
    ]


def grace_shortfalls(manifests: list[dict[str, Any]], limits: dict[str, int]) -> list[str]:
    """Worker Deployments whose termination grace does not cover their queue's longest task (plus a margin), and
    queues without a worker Deployment."""
    problems, seen = [], set()
    for manifest in manifests:
        labels = (manifest.get("metadata") or {}).get("labels") or {}
        if manifest.get("kind") != "Deployment" or labels.get("app.kubernetes.io/component") != "worker":
            continue
        queue = labels.get("atrium.dev/process", "").removeprefix("worker_")
        seen.add(queue)
        grace = manifest["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
        if queue not in limits:
            problems.append(f"{manifest['metadata']['name']}: unknown queue {queue!r}")
        elif grace <= limits[queue] + GRACE_MARGIN:
            problems.append(
                f"{manifest['metadata']['name']}: terminationGracePeriodSeconds {grace} <= "
                f"{limits[queue]} s (the queue's hard time limit) + {GRACE_MARGIN} s"
            )
    problems += [f"queue {queue}: no worker Deployment" for queue in sorted(set(limits) - seen)]
    return problems


# ------------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize("service", SERVICES)
def test_every_worker_reserves_one_message_and_acknowledges_it_after_the_task(service):
    # given each service's worker process, with its own settings and tasks
    config = service_celery(service)

    # then one message per pool process at a time, acknowledged late and requeued if the process dies
    assert config["prefetch"] == 1
    assert config["acks_late"] is True
    assert config["reject_on_worker_lost"] is True
    assert config["tasks"], f"{service} registers no task"
    for name, task in config["tasks"].items():
        assert task["acks_late"] is True, name
        assert task["reject_on_worker_lost"] is True, name


@pytest.mark.parametrize("service", SERVICES)
def test_every_task_has_a_soft_limit_below_its_hard_limit(service):
    for name, task in service_celery(service)["tasks"].items():
        assert 0 < task["soft_time_limit"] < task["time_limit"], name


def test_default_time_limits_come_from_the_environment():
    # given the process's settings (CELERY_TASK_TIME_LIMIT / CELERY_TASK_SOFT_TIME_LIMIT, defaults 300 / 270)
    assert app.conf.task_time_limit == settings.CELERY_TASK_TIME_LIMIT == 300
    assert app.conf.task_soft_time_limit == settings.CELERY_TASK_SOFT_TIME_LIMIT == 270

    # when an operator sets them
    config = service_celery("ledger", CELERY_TASK_TIME_LIMIT="120", CELERY_TASK_SOFT_TIME_LIMIT="100")

    # then the tasks without their own limits run under them
    assert config["tasks"]["ledger.integrity_check"]["time_limit"] == 120
    assert config["tasks"]["ledger.integrity_check"]["soft_time_limit"] == 100


def test_audit_archive_has_its_own_longer_limits():
    # a million events per archive file takes minutes; the other audit tasks keep the default
    tasks = service_celery("portal")["tasks"]

    assert tasks["audit.archive"]["time_limit"] == 1800
    assert tasks["audit.ingest"]["time_limit"] == 300
    assert queue_hard_limits()["audit"] == 1800
    assert queue_hard_limits()["payments"] == 300


@pytest.mark.parametrize("service", SERVICES)
def test_visibility_timeout_outlasts_every_task_of_every_service(service):
    config = service_celery(service)

    assert visibility_shortfalls(config) == []


def test_visibility_shortfall_is_reported_when_the_timeout_is_shorter_than_a_task():
    # given a visibility timeout (600 s) shorter than a task may hold its message (archive: 1800 s; a retry
    # with backoff up to 600 s plus 300 s of run)
    config = service_celery("portal", CELERY_VISIBILITY_TIMEOUT="600")

    # then those tasks are named
    shortfalls = visibility_shortfalls(config)
    assert any(s.startswith("audit.archive:") for s in shortfalls)
    assert any(s.startswith("audit.ingest:") for s in shortfalls)
    assert not any(s.startswith("portal.ping:") for s in shortfalls)


# ------------------------------------------------------------------------------------------------ the chart


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    try:
        from devtools.chart import render
    except ImportError as exc:  # the chart helper's module (branch h/chart + h/chartcheck) is not merged yet
        pytest.skip(f"devtools.chart.render is not available: {exc}")
    return render(values)


def _workers(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each queue's worker Deployment in the rendered chart."""
    return {
        m["metadata"]["labels"]["atrium.dev/process"].removeprefix("worker_"): m
        for m in manifests
        if m.get("kind") == "Deployment" and m["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    }


def pod_celery_env(manifests: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """The CELERY_* environment a worker pod gets: its ConfigMaps (envFrom), then its container's own values."""
    config_maps = {m["metadata"]["name"]: m.get("data") or {} for m in manifests if m.get("kind") == "ConfigMap"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
    return {k: v for k, v in env.items() if k in ("CELERY_TASK_TIME_LIMIT", "CELERY_TASK_SOFT_TIME_LIMIT",
                                                 "CELERY_VISIBILITY_TIMEOUT")}  # fmt: skip


def chart_limits(manifests: list[dict[str, Any]]) -> dict[str, int]:
    """Each queue's longest hard time limit as its worker pods run: the worker processes started with the pod's
    CELERY_* environment (an operator's ``celery.taskTimeLimit`` included)."""
    limits = {}
    for queue, deployment in _workers(manifests).items():
        limits[queue] = queue_hard_limits(**pod_celery_env(manifests, deployment))[queue]
    return limits


def test_every_worker_deployment_outlasts_its_queues_longest_task():
    # given the chart rendered with its default values
    manifests = _render()
    limits = chart_limits(manifests)

    # then each queue has a worker Deployment whose termination grace covers its longest task (audit's archive too)
    assert limits == {"portal": 300, "audit": 1800, "ledger": 300, "payments": 300, "webhooks": 300}
    assert grace_shortfalls(manifests, limits) == []
    # and the pods' visibility timeout outlasts every task they run
    for queue, deployment in _workers(manifests).items():
        config = service_celery(QUEUE_SERVICES[queue], **pod_celery_env(manifests, deployment))
        assert visibility_shortfalls(config) == [], queue


def test_longer_task_limits_are_covered_by_longer_graces():
    # given an operator who lets tasks run 600 s and gives the workers 630 s to stop
    grace = {queue: {"terminationGracePeriodSeconds": 630} for queue in ("portal", "ledger", "payments", "webhooks")}
    manifests = _render({"celery": {"taskTimeLimit": 600, "taskSoftTimeLimit": 570}, "workers": grace})

    # then the pods run their tasks under 600 s, and every grace still covers its queue
    limits = chart_limits(manifests)
    assert limits["payments"] == 600
    assert limits["audit"] == 1800
    assert grace_shortfalls(manifests, limits) == []


def test_a_worker_grace_shorter_than_its_task_limit_is_caught():
    from helm_python.errors import HelmRenderError

    # given the payments worker's grace cut to 60 s (its tasks may run 300 s): the chart refuses to render it
    with pytest.raises(HelmRenderError, match=r"workers\.payments\.terminationGracePeriodSeconds \(60\)"):
        _render({"workers": {"payments": {"terminationGracePeriodSeconds": 60}}})

    # and when a rendered manifest is patched to 60 s afterwards (an overlay), the check names it, and only it
    manifests = _render()
    _workers(manifests)["payments"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 60
    shortfalls = grace_shortfalls(manifests, chart_limits(manifests))
    assert len(shortfalls) == 1
    assert "payments" in shortfalls[0]
    assert "terminationGracePeriodSeconds 60 " in shortfalls[0]


def test_a_queue_without_a_worker_deployment_is_caught():
    # the check itself: a rendered chart missing the audit worker
    manifests = [
        m for m in _render() if (m.get("metadata") or {}).get("labels", {}).get("atrium.dev/process") != "worker_audit"
    ]

    assert grace_shortfalls(manifests, queue_hard_limits()) == ["queue audit: no worker Deployment"]


# ------------------------------------------------------------------------------------------------ live: SIGTERM


def _started(result: AsyncResult) -> bool:
    return result.state in ("STARTED", "SUCCESS")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_given_sigterm_finishes_its_running_task_then_exits(harness):
    # given a real worker (one pool process) running a 4-second task, and a second task waiting in the queue
    worker = harness.worker("portal", database_url=current_test_database_url())
    running = app.send_task("portal.probe", kwargs={"sleep": 4})
    wait_until(lambda: _started(running), 20, "the first task to start")
    waiting = app.send_task("portal.probe", kwargs={"outcome": "succeed"})

    # when Kubernetes stops the pod: SIGTERM to the worker's main process
    sent = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)
    code = worker.proc.wait(30)
    stopped_after = time.monotonic() - sent

    # then the running task finished (once) before the worker exited cleanly
    assert code == 0, worker.output()[-3000:]
    assert running.get(timeout=5) == {"outcome": "succeed", "retries": 0, "service": "portal"}
    assert stopped_after >= 2, f"exited {stopped_after:.1f} s after SIGTERM: did it wait for the task?"
    assert worker.output().count("Task portal.probe[" + running.id + "] succeeded") == 1
    # and the waiting one was not taken with it (prefetch 1): still queued, a new worker runs it
    assert waiting.state == "PENDING"
    harness.worker("portal", database_url=current_test_database_url())
    assert waiting.get(timeout=20)["outcome"] == "succeed"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_given_sigterm_exits_at_once_and_hands_back_what_it_held(harness):
    # given a real worker with nothing to run, holding a task due in 8 s (a countdown: kept, unacknowledged, in the
    # worker that received it until then)
    worker = harness.worker("portal", database_url=current_test_database_url())
    later = app.send_task("portal.probe", kwargs={"outcome": "succeed"}, countdown=8)
    wait_until(lambda: f"Task portal.probe[{later.id}] received" in worker.output(), 10, "the worker to hold it")

    # when it is sent SIGTERM
    sent = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)
    code = worker.proc.wait(30)

    # then it exits cleanly without waiting for the task's time, giving it back to the queue
    assert code == 0, worker.output()[-3000:]
    assert time.monotonic() - sent < 6
    assert "Restoring 1 unacknowledged message(s)" in worker.output()
    assert later.state == "PENDING"
    # and a new worker runs it, once
    successor = harness.worker("portal", database_url=current_test_database_url())
    assert later.get(timeout=20)["outcome"] == "succeed"
    done = f"Task portal.probe[{later.id}] succeeded"
    # (the result is stored before the worker logs the success: wait for the line, then count it)
    wait_until(lambda: done in successor.output(), 10, "the successor's log line")
    assert successor.output().count(done) == 1
