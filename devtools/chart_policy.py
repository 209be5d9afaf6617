"""The chart's policies, checked over rendered manifests (``devtools.chart.render``): what a platform team asks of every
pod (probes, requests and limits, non-root, read-only root, no privilege), and what Atrium needs (a worker and a
KEDA ScaledObject per Celery queue, a grace period longer than the task time limit, beat alone, migrations as hooks,
NetworkPolicies that admit exactly a service's callers).

Each check returns its problems as lines (empty when the manifests comply); ``policy()`` runs them all.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.chart import NAMESPACE, REPO_ROOT, dependencies_read, name_of
from devtools.supervisor import procfile_read

Manifest = dict[str, Any]

COMPONENT = "app.kubernetes.io/component"
PART_OF = "atrium.dev/part-of"
PROCESS = "atrium.dev/process"
# Components that serve no HTTP: a liveness probe of their own (exec) is required instead of the web probes.
LONG_RUNNING = {"worker", "relay", "beat", "monitor", "dispatcher"}
HEALTH_READY, HEALTH_LIVE = "/health/ready", "/health/live"
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


# --- pods and containers ------------------------------------------------------------------------------------------


@dataclass
class PodTemplate:
    """One workload's pod template, with what the checks need."""

    manifest: Manifest
    metadata: dict[str, Any]
    spec: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.get("labels") or {}

    @property
    def component(self) -> str:
        return self.labels.get(COMPONENT, "")

    @property
    def name(self) -> str:
        return name_of(self.manifest)

    def containers(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for kind in ("initContainers", "containers"):
            for container in self.spec.get(kind) or []:
                yield kind, container


def pod_templates(manifests: Iterable[Manifest]) -> list[PodTemplate]:
    """Every pod template: Deployments, StatefulSets, DaemonSets, Jobs (hooks included) and CronJobs."""
    templates = []
    for manifest in manifests:
        spec = manifest.get("spec") or {}
        if manifest.get("kind") == "CronJob":
            spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
        elif manifest.get("kind") not in POD_KINDS:
            continue
        template = spec.get("template") or {}
        templates.append(PodTemplate(manifest, template.get("metadata") or {}, template.get("spec") or {}))
    return templates


def _effective(pod: PodTemplate, container: dict[str, Any], key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (pod.spec.get("securityContext") or {}).get(key)


def containers_problems(manifests: Iterable[Manifest]) -> list[str]:
    """Every container: CPU and memory requests and limits; runs as a non-root user; read-only root filesystem;
    no privilege escalation, not privileged, every capability dropped; a writable /tmp when the root is read-only."""
    problems = []
    for pod in pod_templates(manifests):
        for kind, container in pod.containers():
            where = f"{pod.name} {kind[:-1]} {container.get('name')}"
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if not (resources.get(bound) or {}).get(resource):
                        problems.append(f"{where}: no {resource} in resources.{bound}")
            if _effective(pod, container, "runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if _effective(pod, container, "runAsUser") == 0:
                problems.append(f"{where}: runAsUser is 0 (root)")
            security = container.get("securityContext") or {}
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if security.get("privileged"):
                problems.append(f"{where}: privileged")
            if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where}: capabilities.drop does not include ALL")
            mounts = {mount.get("mountPath") for mount in container.get("volumeMounts") or []}
            if "/tmp" not in mounts:  # noqa: S108 (checking for it, not writing there)
                problems.append(f"{where}: no volume mounted at /tmp (the one writable path)")
    return problems


def _probe_handler(probe: Any) -> str | None:
    if not isinstance(probe, dict):
        return None
    for handler in ("httpGet", "exec", "tcpSocket", "grpc"):
        if probe.get(handler):
            return handler
    return None


def probes_problems(manifests: Iterable[Manifest]) -> list[str]:
    """Web containers: readiness on /health/ready, liveness on /health/live, a startup probe. Long-running
    non-web containers (workers, relays, beat, the job monitor, the dispatcher): a liveness probe (they serve no
    HTTP, so an exec probe). Run-to-completion Jobs (migrations) are exempt, bounded by activeDeadlineSeconds."""
    problems = []
    for pod in pod_templates(manifests):
        if pod.manifest["kind"] == "Job":
            if not (pod.manifest.get("spec") or {}).get("activeDeadlineSeconds"):
                problems.append(f"{pod.name}: a Job without activeDeadlineSeconds (no probe bounds it)")
            continue
        for kind, container in pod.containers():
            if kind != "containers":
                continue
            where = f"{pod.name} container {container.get('name')}"
            declared = {p.get("name") for p in container.get("ports") or []} | {
                p.get("containerPort") for p in container.get("ports") or []
            }
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
                if port is not None and port not in declared:
                    problems.append(f"{where}: {probe} probes port {port!r}, which the container does not declare")
            if pod.component == "web":
                for probe, path in (("readinessProbe", HEALTH_READY), ("livenessProbe", HEALTH_LIVE)):
                    actual = ((container.get(probe) or {}).get("httpGet") or {}).get("path")
                    if actual != path:
                        problems.append(f"{where}: {probe} is not an HTTP GET of {path} (it is {actual!r})")
                if not _probe_handler(container.get("startupProbe")):
                    problems.append(f"{where}: no startupProbe")
            elif pod.component in LONG_RUNNING:
                if not _probe_handler(container.get("livenessProbe")):
                    problems.append(f"{where}: no livenessProbe")
            else:
                problems.append(f"{where}: unknown component {pod.component!r} (no probe rule for it)")
    return problems


def checksum_problems(manifests: Iterable[Manifest]) -> list[str]:
    """Every pod template carries ``checksum/config``, so a config change rolls the pods."""
    return [
        f"{pod.name}: pod template has no checksum/config annotation"
        for pod in pod_templates(manifests)
        if not (pod.metadata.get("annotations") or {}).get("checksum/config")
    ]


def beat_problems(manifests: Iterable[Manifest]) -> list[str]:
    """Beat: exactly one Deployment, one replica, strategy Recreate (two beats send every periodic task twice)."""
    beats = [pod for pod in pod_templates(manifests) if pod.component == "beat"]
    if len(beats) != 1:
        return [f"{len(beats)} beat workloads (exactly one is allowed)"]
    beat = beats[0].manifest
    spec = beat.get("spec") or {}
    problems = []
    if beat["kind"] != "Deployment":
        problems.append(f"{name_of(beat)}: beat is a {beat['kind']}, not a Deployment")
    if spec.get("replicas") != 1:
        problems.append(f"{name_of(beat)}: replicas is {spec.get('replicas')!r}, not 1")
    if (spec.get("strategy") or {}).get("type") != "Recreate":
        problems.append(f"{name_of(beat)}: strategy is not Recreate")
    if any(m.get("kind") == "HorizontalPodAutoscaler" and _targets(m, beat) for m in manifests):
        problems.append(f"{name_of(beat)}: an HPA scales beat")
    return problems


def _targets(scaler: Manifest, workload: Manifest) -> bool:
    ref = (scaler.get("spec") or {}).get("scaleTargetRef") or {}
    return ref.get("name") == workload["metadata"]["name"] and ref.get("kind", "Deployment") == workload["kind"]


# --- environment (ConfigMaps and env) -------------------------------------------------------------------------------


def container_env(container: dict[str, Any], manifests: Iterable[Manifest]) -> dict[str, str | None]:
    """The container's environment as far as the manifests tell it: ConfigMap values resolved, Secret values
    unknown (None); ``env`` wins over ``envFrom``."""
    config_maps = {m["metadata"]["name"]: m.get("data") or {} for m in manifests if m.get("kind") == "ConfigMap"}
    env: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            for key, value in config_maps.get(source["configMapRef"].get("name"), {}).items():
                env[prefix + key] = value
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = (item.get("valueFrom") or {}).get("configMapKeyRef")
            env[item["name"]] = config_maps.get(ref.get("name"), {}).get(ref.get("key")) if ref else None
    return env


def kit_default(name: str) -> int:
    """An integer setting's default in the kit (``env.int("<name>", default=N)`` in services/kit/conf.py)."""
    source = (REPO_ROOT / "services" / "kit" / "conf.py").read_text()
    match = re.search(rf'env\.int\("{re.escape(name)}", default=([\d_]+)\)', source)
    if match is None:
        raise LookupError(f"services/kit/conf.py has no env.int({name!r}, default=…)")
    return int(match.group(1).replace("_", ""))


def task_time_limit(container: dict[str, Any], manifests: Iterable[Manifest]) -> int:
    """The Celery hard time limit a worker container runs with: CELERY_TASK_TIME_LIMIT from its environment,
    else the kit's default."""
    value = container_env(container, list(manifests)).get("CELERY_TASK_TIME_LIMIT")
    return int(value) if value else kit_default("CELERY_TASK_TIME_LIMIT")


def _constant(node: ast.expr, names: dict[str, int]) -> int | None:
    """An integer expression of literals and module constants (``30 * 60``, ``LIMIT + 60``), or None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.FloorDiv):
        left, right = _constant(node.left, names), _constant(node.right, names)
        if left is None or right is None or (isinstance(node.op, ast.FloorDiv) and right == 0):
            return None
        return {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__, ast.FloorDiv: int.__floordiv__}[
            type(node.op)
        ](left, right)
    return None


def task_time_limits(workers_dir: Path = REPO_ROOT / "workers") -> dict[str, int]:
    """Queue → the longest ``time_limit`` a task of that queue declares itself (``@app.task(name="<queue>.…",
    time_limit=N)`` in workers/*.py, N a literal or a module constant; a task's name prefix is its queue), read from
    the source without importing it. Raises ValueError for a limit it cannot read (so the check cannot pass blind)."""
    limits: dict[str, int] = {}
    for path in sorted(workers_dir.glob("*.py")):
        module = ast.parse(path.read_text())
        names: dict[str, int] = {}
        for statement in module.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
                value = _constant(statement.value, names)
                if isinstance(target, ast.Name) and value is not None:
                    names[target.id] = value
        for node in ast.walk(module):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "task"):
                continue
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            name, limit = keywords.get("name"), keywords.get("time_limit")
            if limit is None or not isinstance(name, ast.Constant):
                continue
            seconds = _constant(limit, names)
            if seconds is None:
                raise ValueError(f"{path.name}: task {name.value}'s time_limit is not a constant this check can read")
            queue = str(name.value).split(".", 1)[0]
            limits[queue] = max(limits.get(queue, 0), seconds)
    return limits


def grace_problems(manifests: Iterable[Manifest]) -> list[str]:
    """Every worker's terminationGracePeriodSeconds exceeds the longest Celery hard time limit of its queue (the
    environment's, or a task's own ``time_limit``), so a SIGTERM'd worker
    finishes the tasks it holds (warm shutdown) before the kubelet's SIGKILL; the broker's visibility timeout exceeds
    it too, or late-acked tasks would be redelivered while still running."""
    manifests = list(manifests)
    problems = []
    try:
        own_limits = task_time_limits()
    except ValueError as unreadable:
        own_limits = {}
        problems.append(str(unreadable))
    for pod in pod_templates(manifests):
        if pod.component != "worker":
            continue
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        queue = pod.labels.get(PROCESS, "").removeprefix("worker_")
        for _, container in pod.containers():
            limit = max(task_time_limit(container, manifests), own_limits.get(queue, 0))
            if not grace > limit:
                problems.append(f"{pod.name}: terminationGracePeriodSeconds {grace} <= task time limit {limit}")
            visibility = container_env(container, manifests).get("CELERY_VISIBILITY_TIMEOUT")
            visibility_s = int(visibility) if visibility else kit_default("CELERY_VISIBILITY_TIMEOUT")
            if not visibility_s > limit:
                problems.append(f"{pod.name}: visibility timeout {visibility_s} <= task time limit {limit}")
    return problems


# --- queues and KEDA ------------------------------------------------------------------------------------------------


def queues_problems(
    manifests: Iterable[Manifest], queues: Iterable[str] | None = None, scaled: Iterable[str] | None = None
) -> list[str]:
    """Every Celery queue has a worker Deployment consuming it, and each queue in ``scaled`` (default: every queue)
    a KEDA ScaledObject on that Deployment with the redis scaler on the queue's list (listName = the queue), a
    listLength, min <= max and a TriggerAuthentication that the chart renders. A queue without one has replicas."""
    if queues is None:
        from services.kit.queues import QUEUES as queues
    scaled_queues = set(queues if scaled is None else scaled)
    manifests = list(manifests)
    workers = {pod.labels.get(PROCESS): pod for pod in pod_templates(manifests) if pod.component == "worker"}
    scaled_objects = [m for m in manifests if m.get("kind") == "ScaledObject"]
    auths = {m["metadata"]["name"] for m in manifests if m.get("kind") == "TriggerAuthentication"}
    problems = []
    for queue in queues:
        worker = workers.get(f"worker_{queue}")
        if worker is None or worker.manifest["kind"] != "Deployment":
            problems.append(f"queue {queue}: no worker Deployment (atrium.dev/process: worker_{queue})")
            continue
        args = [arg for _, c in worker.containers() for arg in c.get("args") or []]
        if args[:1] != [f"worker_{queue}"]:
            problems.append(f"queue {queue}: {worker.name} runs {args!r}, not the Procfile's worker_{queue}")
        objects = [m for m in scaled_objects if _targets(m, worker.manifest)]
        if queue not in scaled_queues:
            if objects:
                problems.append(f"queue {queue}: KEDA is off for it, yet {name_of(objects[0])} scales {worker.name}")
            elif not isinstance((worker.manifest.get("spec") or {}).get("replicas"), int):
                problems.append(f"queue {queue}: {worker.name} has no replicas and no ScaledObject")
            continue
        if len(objects) != 1:
            problems.append(f"queue {queue}: {len(objects)} ScaledObjects scale {worker.name} (one is expected)")
            continue
        spec = objects[0]["spec"]
        triggers = [t for t in spec.get("triggers") or [] if t.get("type") == "redis"]
        if len(triggers) != 1:
            problems.append(f"queue {queue}: {name_of(objects[0])} has {len(triggers)} redis triggers")
            continue
        metadata = triggers[0].get("metadata") or {}
        if metadata.get("listName") != queue:
            problems.append(f"queue {queue}: {name_of(objects[0])} counts list {metadata.get('listName')!r}")
        if not str(metadata.get("listLength", "")).isdigit() or int(metadata["listLength"]) < 1:
            problems.append(f"queue {queue}: {name_of(objects[0])} has no positive listLength")
        low, high = spec.get("minReplicaCount"), spec.get("maxReplicaCount")
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high and high >= 1):
            problems.append(f"queue {queue}: {name_of(objects[0])} min/max replicas are {low!r}/{high!r}")
        auth = (triggers[0].get("authenticationRef") or {}).get("name")
        if auth is not None and auth not in auths:
            problems.append(f"queue {queue}: {name_of(objects[0])} names TriggerAuthentication {auth!r}, not rendered")
        if "replicas" in (worker.manifest.get("spec") or {}):
            problems.append(f"queue {queue}: {worker.name} sets replicas while KEDA owns them")
    return problems


# --- migrations -----------------------------------------------------------------------------------------------------


def migrations_problems(manifests: Iterable[Manifest], services: Iterable[str] | None = None) -> list[str]:
    """One Job per service running ``manage <service> migrate``, a pre-install and pre-upgrade hook."""
    if services is None:
        services = sorted(dependencies_read().get("services") or {})
    jobs: dict[str, list[Manifest]] = {}
    for pod in pod_templates(manifests):
        args = [arg for _, c in pod.containers() for arg in c.get("args") or []]
        if pod.manifest["kind"] == "Job" and args[:1] == ["manage"] and "migrate" in args:
            jobs.setdefault(args[1] if len(args) > 1 else "", []).append(pod.manifest)
    problems = []
    for service in services:
        found = jobs.pop(service, [])
        if len(found) != 1:
            problems.append(f"{service}: {len(found)} migration Jobs (one is expected)")
            continue
        hooks = {h.strip() for h in (found[0]["metadata"].get("annotations") or {}).get("helm.sh/hook", "").split(",")}
        if not {"pre-install", "pre-upgrade"} <= hooks:
            problems.append(f"{name_of(found[0])}: helm.sh/hook is {sorted(hooks - {''})}, not pre-install,pre-upgrade")
    problems += [f"{name_of(job)}: migrates unknown service {service!r}" for service, js in jobs.items() for job in js]
    return problems


# --- processes -------------------------------------------------------------------------------------------------------


def procfile_names() -> set[str]:
    """The process names of the Procfile (what the image's entrypoint runs)."""
    return {entry.name for entry in procfile_read(REPO_ROOT / "Procfile")}


def processes_problems(manifests: Iterable[Manifest]) -> list[str]:
    """Every container runs a Procfile process (``args: [<name>]``) or ``manage <service> …``, labelled with it."""
    names = procfile_names()
    services = set(dependencies_read().get("services") or {})
    problems = []
    for pod in pod_templates(manifests):
        for kind, container in pod.containers():
            args = container.get("args") or []
            where = f"{pod.name} {kind[:-1]} {container.get('name')}"
            if args[:1] == ["manage"]:
                if len(args) < 3 or args[1] not in services:
                    problems.append(f"{where}: manage needs a known service and a command, got {args!r}")
            elif not args or args[0] not in names:
                problems.append(f"{where}: args {args!r} name no Procfile process")
            elif kind == "containers" and pod.labels.get(PROCESS) != args[0]:
                problems.append(f"{where}: labelled {pod.labels.get(PROCESS)!r} but runs {args[0]!r}")
    return problems


# --- Services, disruption budgets ---------------------------------------------------------------------------------


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels + matchExpressions, or a Service's plain map) selects ``labels``."""
    if selector is None:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def web_services_problems(manifests: Iterable[Manifest]) -> list[str]:
    """Each web Deployment has a Service and a PodDisruptionBudget that select its pods and no other pod (the
    workers share the service's part-of label: a selector without the component would send them traffic)."""
    manifests = list(manifests)
    pods = pod_templates(manifests)
    problems = []
    for web in (pod for pod in pods if pod.component == "web"):
        for kind in ("Service", "PodDisruptionBudget"):
            owners = [
                m
                for m in manifests
                if m.get("kind") == kind and selector_matches((m.get("spec") or {}).get("selector"), web.labels)
            ]
            if not owners:
                problems.append(f"{web.name}: no {kind} selects its pods")
            declared = {
                p.get(key)
                for _, c in web.containers()
                for p in c.get("ports") or []
                for key in ("name", "containerPort")
            }
            for service in (o for o in owners if o["kind"] == "Service"):
                for port in service["spec"].get("ports") or []:
                    if port.get("targetPort", port.get("port")) not in declared:
                        problems.append(
                            f"{name_of(service)}: targetPort {port.get('targetPort')!r} is no port of {web.name}"
                        )
            for owner in owners:
                selector = owner["spec"]["selector"]
                others = [p.name for p in pods if p is not web and selector_matches(selector, p.labels)]
                if others:
                    problems.append(f"{name_of(owner)} selects other pods too: {', '.join(others)}")
    return problems


def _floor_replicas(workload: Manifest, manifests: list[Manifest]) -> int | None:
    """The fewest replicas a workload runs: its HPA's or ScaledObject's minimum, else its replicas (default 1)."""
    for scaler in manifests:
        if scaler.get("kind") in {"HorizontalPodAutoscaler", "ScaledObject"} and _targets(scaler, workload):
            spec = scaler.get("spec") or {}
            return spec.get("minReplicas" if scaler["kind"] == "HorizontalPodAutoscaler" else "minReplicaCount", 1)
    replicas = (workload.get("spec") or {}).get("replicas", 1)
    return replicas if isinstance(replicas, int) else None


def scaling_problems(manifests: Iterable[Manifest]) -> list[str]:
    """An HPA scales a Deployment that leaves ``replicas`` to it, between a minimum <= its maximum, on CPU; a
    PodDisruptionBudget leaves a pod evictable at the workload's fewest replicas (else a node drain hangs)."""
    manifests = list(manifests)
    workloads = {(m["kind"], m["metadata"]["name"]): m for m in manifests if m.get("kind") in POD_KINDS}
    problems = []
    for hpa in (m for m in manifests if m.get("kind") == "HorizontalPodAutoscaler"):
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        target = workloads.get((ref.get("kind"), ref.get("name")))
        if target is None:
            problems.append(f"{name_of(hpa)} scales {ref.get('kind')}/{ref.get('name')}, which is not rendered")
            continue
        if "replicas" in (target.get("spec") or {}):
            problems.append(f"{name_of(hpa)}: {name_of(target)} sets replicas (every upgrade would reset the HPA's)")
        if not spec.get("minReplicas", 1) <= spec.get("maxReplicas", 0):
            problems.append(f"{name_of(hpa)}: minReplicas {spec.get('minReplicas')} > maxReplicas")
        resources = {(m.get("resource") or {}).get("name") for m in spec.get("metrics") or []}
        if "cpu" not in resources:
            problems.append(f"{name_of(hpa)}: no CPU metric")
    for pdb in (m for m in manifests if m.get("kind") == "PodDisruptionBudget"):
        spec = pdb.get("spec") or {}
        selected = [w for w in workloads.values() if selector_matches(spec.get("selector"), _template_labels(w))]
        for workload in selected:
            floor = _floor_replicas(workload, manifests)
            min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
            if isinstance(min_available, int) and floor is not None and min_available >= floor:
                problems.append(
                    f"{name_of(pdb)}: minAvailable {min_available} >= {name_of(workload)}'s {floor} replica(s): "
                    "no pod may ever be evicted"
                )
            if max_unavailable in (0, "0%"):
                problems.append(f"{name_of(pdb)}: maxUnavailable 0: no pod may ever be evicted")
    return problems


def _template_labels(workload: Manifest) -> dict[str, str]:
    return (((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def service_monitor_problems(manifests: Iterable[Manifest]) -> list[str]:
    """A ServiceMonitor (when rendered) selects every web Service, in its namespace, by a port each of them names."""
    manifests = list(manifests)
    monitors = [m for m in manifests if m.get("kind") == "ServiceMonitor"]
    web_pods = [pod for pod in pod_templates(manifests) if pod.component == "web"]
    services = [
        m
        for m in manifests
        if m.get("kind") == "Service"
        and any(selector_matches((m.get("spec") or {}).get("selector"), pod.labels) for pod in web_pods)
    ]
    problems = []
    for monitor in monitors:
        spec = monitor.get("spec") or {}
        namespaces = (spec.get("namespaceSelector") or {}).get("matchNames")
        if namespaces is not None and (monitor["metadata"].get("namespace") or NAMESPACE) not in namespaces:
            problems.append(f"{name_of(monitor)}: namespaceSelector leaves out the release's namespace")
        ports = {endpoint.get("port") for endpoint in spec.get("endpoints") or []}
        for service in services:
            if not selector_matches(spec.get("selector"), service["metadata"].get("labels") or {}):
                problems.append(f"{name_of(monitor)} does not select {name_of(service)}")
            elif not ports & {port.get("name") for port in service["spec"].get("ports") or []}:
                problems.append(f"{name_of(monitor)}: {name_of(service)} has no port named {sorted(map(str, ports))}")
    return problems


# --- NetworkPolicies ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A pod that sends or receives traffic: its namespace (and that namespace's labels), its labels, its ports."""

    labels: dict[str, str]
    namespace: str = NAMESPACE
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.namespace, tuple(sorted(self.labels.items()))))

    @property
    def all_namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def pod_peer(pod: PodTemplate, namespace: str = NAMESPACE) -> Peer:
    """A pod template as a network peer (its container ports by name, for named NetworkPolicy ports)."""
    ports = {
        port["name"]: port["containerPort"]
        for _, container in pod.containers()
        for port in container.get("ports") or []
        if port.get("name")
    }
    return Peer(labels=dict(pod.labels), namespace=namespace, ports=ports)


def _policy_types(policy: Manifest) -> list[str]:
    spec = policy.get("spec") or {}
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress") else []))


def _port_admitted(rule_ports: list[dict[str, Any]] | None, port: int | None, target: Peer) -> bool:
    if not rule_ports or port is None:
        return True
    for item in rule_ports:
        value = item.get("port")
        if value is None:
            return True
        number = target.ports.get(value) if isinstance(value, str) else value
        if number is not None and number <= port <= item.get("endPort", number):
            return True
    return False


def _peer_admitted(peer: dict[str, Any], source: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # addresses, not pods: not modelled
    namespaces, pods = peer.get("namespaceSelector"), peer.get("podSelector")
    if namespaces is None:
        in_namespace = source.namespace == policy_namespace
    else:
        in_namespace = selector_matches(namespaces or {"matchLabels": {}}, source.all_namespace_labels)
    return in_namespace and (pods is None or selector_matches(pods or {"matchLabels": {}}, source.labels))


def network_admits(manifests: Iterable[Manifest], source: Peer, target: Peer, port: int | None = None) -> bool:
    """Whether the NetworkPolicies let ``source`` open a connection to ``target`` on ``port``, by Kubernetes'
    semantics: a pod no Ingress policy selects accepts everything; a selected pod accepts what any rule of any
    selecting policy admits (peers: a podSelector alone means the policy's namespace; an empty ``from`` admits all)."""
    selecting = [
        m
        for m in manifests
        if m.get("kind") == "NetworkPolicy"
        and (m["metadata"].get("namespace") or NAMESPACE) == target.namespace
        and "Ingress" in _policy_types(m)
        and selector_matches((m.get("spec") or {}).get("podSelector") or {"matchLabels": {}}, target.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            if not _port_admitted(rule.get("ports"), port, target):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_admitted(p, source, target.namespace) for p in peers):
                return True
    return False


def network_problems(
    manifests: Iterable[Manifest],
    graph: dict[str, Any] | None = None,
    outsiders: dict[str, Peer] | None = None,
) -> list[str]:
    """Each service's web pods admit exactly: the pods of the services that call it (their web, workers, relays…),
    the portal's, their own service's, and the ``outsiders`` given as admitted (the ingress controller, Prometheus);
    every other Atrium pod refuses every Atrium pod. ``graph`` is the chart's dependency file (default: the file)."""
    manifests = list(manifests)
    services = (graph if graph is not None else dependencies_read()).get("services") or {}
    pods = pod_templates(manifests)
    problems = []
    if not any(m.get("kind") == "NetworkPolicy" for m in manifests):
        return ["no NetworkPolicy is rendered"]
    stranger = Peer(labels={"app": "stranger"}, namespace="default")
    neighbour = Peer(labels={"app": "neighbour"})  # same namespace, not Atrium's
    for target_pod in pods:
        target = pod_peer(target_pod)
        part_of = target_pod.labels.get(PART_OF, "")
        port = next(iter(target.ports.values()), None)
        if target_pod.component == "web":
            callers = {name for name, entry in services.items() if part_of in (entry.get("services") or [])}
            allowed = callers | {"portal", part_of}
        else:
            allowed = set()
        for source_pod in pods:
            source_part = source_pod.labels.get(PART_OF, "")
            admitted = network_admits(manifests, pod_peer(source_pod), target, port)
            if admitted != (source_part in allowed):
                problems.append(
                    f"{target_pod.name} {'admits' if admitted else 'refuses'} {source_pod.name} "
                    f"(part-of {source_part}; allowed: {', '.join(sorted(allowed)) or 'none'})"
                )
        for label, outsider in {"a pod in another namespace": stranger, "a non-Atrium pod": neighbour}.items():
            if network_admits(manifests, outsider, target, port):
                problems.append(f"{target_pod.name} admits {label}")
        if target_pod.component == "web":
            for label, outsider in (outsiders or {}).items():
                if not network_admits(manifests, outsider, target, port):
                    problems.append(f"{target_pod.name} refuses {label}")
    return problems


def outsiders_from_values(values: dict[str, Any]) -> dict[str, Peer]:
    """The ingress controller and Prometheus as peers matching the chart's networkPolicy selectors (merged values)."""
    peers = {}
    for key, label in (("ingressControllerSelector", "the ingress controller"), ("prometheusSelector", "Prometheus")):
        selector = ((values.get("networkPolicy") or {}).get(key)) or {}
        namespace_labels = ((selector.get("namespaceSelector") or {}).get("matchLabels")) or {}
        pod_labels = ((selector.get("podSelector") or {}).get("matchLabels")) or {}
        namespace = namespace_labels.get("kubernetes.io/metadata.name", f"{key}-namespace")
        peers[label] = Peer(labels=pod_labels, namespace=namespace, namespace_labels=namespace_labels)
    return peers


# --- all of them ----------------------------------------------------------------------------------------------------


def keda_queues(values: dict[str, Any]) -> set[str]:
    """The queues the merged ``values`` give a ScaledObject (keda.enabled and the queue's workers.<q>.keda.enabled)."""
    if not (values.get("keda") or {}).get("enabled"):
        return set()
    workers = values.get("workers") or {}
    return {q for q, w in workers.items() if ((w or {}).get("keda") or {}).get("enabled", True)}


CHECKS: dict[str, Callable[[list[Manifest]], list[str]]] = {
    "containers": containers_problems,
    "probes": probes_problems,
    "checksum": checksum_problems,
    "beat": beat_problems,
    "grace": grace_problems,
    "queues": queues_problems,
    "migrations": migrations_problems,
    "processes": processes_problems,
    "web services": web_services_problems,
    "service monitor": service_monitor_problems,
    "scaling": scaling_problems,
    "network": network_problems,
}


def policy(manifests: Iterable[Manifest], values: dict[str, Any] | None = None) -> list[str]:
    """Every policy's problems, each line prefixed by the policy's name (empty when the chart complies). ``values``
    (the release's merged values, ``devtools.chart.values_merged``) says which queues KEDA scales and who the
    ingress controller and Prometheus are; without them every queue needs a ScaledObject."""
    manifests = list(manifests)
    checks = dict(CHECKS)
    if values is not None:
        checks["queues"] = lambda m: queues_problems(m, scaled=keda_queues(values))
        checks["network"] = lambda m: network_problems(m, outsiders=outsiders_from_values(values))
    return [f"{name}: {problem}" for name, check in checks.items() for problem in check(manifests)]
