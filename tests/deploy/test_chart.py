"""The Helm chart, checked offline: Helm's own engine renders and lints it (helm-python-sdk, in-process), every
manifest is validated strictly against the Kubernetes schemas of two minor versions and the KEDA objects against
KEDA's vendored CRDs, and the policies hold for every pod. Each validator and policy is also shown refusing a broken
manifest, so a green run means something."""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

import pytest
import yaml

from devtools import chart, chart_cli
from devtools import chart_policy as policy

VALUES_SETS = {
    "default": [],
    "small": [chart.CHART_DIR / "values-small.yaml"],
    "large": [chart.CHART_DIR / "values-large.yaml"],
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {label: chart.render(values_files=files) for label, files in VALUES_SETS.items()}


@pytest.fixture(scope="module")
def manifests(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The default install's manifests (tests copy before they break one)."""
    return rendered["default"]


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def broken(manifests: list[dict[str, Any]], kind: str, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A deep copy of ``manifests`` and, in it, the manifest to break."""
    copied = copy.deepcopy(manifests)
    return copied, find(copied, kind, name)


# --- rendering and lint ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", VALUES_SETS)
def test_chart_renders_every_process_with_each_values_file(rendered, label):
    # given the chart with its default values, the small and the large example
    manifests = rendered[label]

    # then every process of the Procfile has a workload, and the hooks are in the output
    processes = {pod.labels.get(policy.PROCESS) for pod in policy.pod_templates(manifests)} - {"manage"}
    assert processes == policy.procfile_names()
    hooks = [m for m in manifests if "helm.sh/hook" in (m["metadata"].get("annotations") or {})]
    assert {m["kind"] for m in hooks} >= {"Job"}
    kinds = {m["kind"] for m in manifests}
    assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "NetworkPolicy", "Job"}


def test_values_files_change_what_is_rendered(rendered):
    # the examples are not the defaults under other names
    def replicas(manifests):
        return {m["metadata"]["name"]: m["spec"].get("replicas") for m in manifests if m["kind"] == "Deployment"}

    assert replicas(rendered["small"]) != replicas(rendered["default"]) or len(rendered["small"]) != len(
        rendered["default"]
    )
    assert replicas(rendered["large"]) != replicas(rendered["default"]) or len(rendered["large"]) != len(
        rendered["default"]
    )


def test_render_names_objects_after_the_release_and_namespace():
    manifests = chart.render(release="blue", namespace="payments-prod")
    names = {m["metadata"]["name"] for m in manifests}
    assert "blue-atrium-ledger" in names
    assert all(n.startswith("blue-atrium") for n in names)


@pytest.mark.parametrize("label", VALUES_SETS)
def test_lint_is_clean(label):
    assert chart.lint(values_files=VALUES_SETS[label]) == []


def test_lint_and_render_refuse_values_the_chart_schema_refuses():
    # given values that break values.schema.json (a string port, limits removed)
    bad_port = {"services": {"ledger": {"port": "eighty"}}}
    no_limits = {"workers": {"payments": {"resources": {"limits": None}}}}

    # then lint reports them and rendering fails
    assert any("/services/ledger/port" in finding for finding in chart.lint(bad_port))
    assert any("limits" in finding for finding in chart.lint(no_limits))
    with pytest.raises(Exception, match="port"):
        chart.render(bad_port)


def test_values_files_layer_as_helm_layers_them(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("workers: {payments: {concurrency: 3, keda: {maxReplicaCount: 5}}}\n")
    second.write_text("workers: {payments: {keda: {maxReplicaCount: 7}}}\n")
    merged = chart.values_merged({"workers": {"payments": {"concurrency": 4}}}, values_files=[first, second])
    assert merged["workers"]["payments"]["concurrency"] == 4
    assert merged["workers"]["payments"]["keda"]["maxReplicaCount"] == 7
    assert (
        merged["workers"]["payments"]["keda"]["listLength"]
        == chart.values_merged()["workers"]["payments"]["keda"]["listLength"]
    )


# --- Kubernetes schemas --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", VALUES_SETS)
def test_every_manifest_validates_strictly_against_two_kubernetes_versions(rendered, label):
    assert len(chart.K8S_VERSIONS) >= 2
    assert chart.validate(rendered[label], k8s_versions=chart.K8S_VERSIONS) == []


def test_the_oldest_kubernetes_the_chart_admits_is_validated_too(manifests):
    # Chart.yaml's kubeVersion (">=1.29.0-0") promises that floor: its schemas must accept the chart as well
    kube_version = yaml.safe_load((chart.CHART_DIR / "Chart.yaml").read_text())["kubeVersion"]
    floor = re.fullmatch(r">=\s*(\d+\.\d+)(\.\d+)?(-0)?", kube_version.strip())
    assert floor, kube_version
    assert tuple(map(int, floor.group(1).split("."))) <= tuple(map(int, chart.K8S_VERSIONS[0].split(".")))
    assert chart.validate(manifests, k8s_versions=[floor.group(1)]) == []


def deployment_with(manifests, change):
    _, ledger = broken(manifests, "Deployment", "atrium-ledger")
    change(ledger)
    return ledger


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: container(m).update(livenessProbes={}), "'livenessProbes' was unexpected"),
        (lambda m: m["spec"].update(replicas="two"), "'two' is not of type"),
        (lambda m: container(m).pop("name"), "'name' is a required property"),
        (lambda m: m.update(apiVersion="apps/v1beta2"), "Couldn't find schema"),
        (lambda m: m["metadata"]["labels"].update({"atrium.dev/part-of": "ledger service"}), "not a valid label value"),
        (lambda m: m["spec"]["selector"]["matchLabels"].update(extra="x"), "selector does not match"),
        (lambda m: m["metadata"].update(name="Atrium_Ledger"), "not a DNS subdomain"),
        (lambda m: container(m).update(image=""), "image: required"),
    ],
    ids=["unknown-field", "wrong-type", "missing-required", "api-not-served", "label", "selector", "name", "image"],
)
def test_schema_validation_refuses_a_broken_manifest(manifests, change, expected):
    ledger = deployment_with(manifests, change)
    problems = chart.validate([ledger])
    assert any(expected in p for p in problems), problems


def test_schema_validation_is_per_kubernetes_version(manifests):
    # given a pod field that Kubernetes 1.37 has and 1.33 has not
    ledger = deployment_with(manifests, lambda m: m["spec"]["template"]["spec"].update(hostnameOverride="ledger"))

    # then only the older version refuses it
    assert chart.validate([ledger], k8s_versions=["1.37"]) == []
    problems = chart.validate([ledger], k8s_versions=["1.33", "1.37"])
    assert problems
    assert all("Kubernetes 1.33" in p for p in problems), problems


def test_schema_validation_refuses_kinds_it_cannot_check(manifests):
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert any("Couldn't find schema" in p for p in chart.validate([unknown]))


# --- KEDA ----------------------------------------------------------------------------------------------------------


def test_vendored_keda_crds_are_the_ones_their_source_names():
    source = (chart.KEDA_CRD_DIR / "SOURCE.md").read_text()
    assert f"`v{chart.KEDA_VERSION}`" in source
    for file in (*chart.KEDA_CRD_FILES, "LICENSE"):
        [digest] = re.findall(rf"\| `{re.escape(file)}` \|[^|]*\| `([0-9a-f]{{64}})` \|", source)
        assert hashlib.sha256((chart.KEDA_CRD_DIR / file).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("label", VALUES_SETS)
def test_keda_objects_validate_against_the_crds(rendered, label):
    keda = [m for m in rendered[label] if m["apiVersion"].startswith("keda.sh/")]
    assert {m["kind"] for m in keda} == {"ScaledObject", "TriggerAuthentication"}
    assert [p for m in keda for p in chart.crd_problems(m)] == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda so: so["spec"]["triggers"][0]["metadata"].update(listLength=20), "20 is not of type 'string'"),
        (lambda so: so["spec"]["triggers"][0].update(metdata={}), "'metdata' was unexpected"),
        (lambda so: so["spec"].update(minReplicas=1), "'minReplicas' was unexpected"),
        (lambda so: so["spec"].update(minReplicaCount=9, maxReplicaCount=2), "minReplicaCount must be less"),
        (lambda so: so["spec"].pop("scaleTargetRef"), "'scaleTargetRef' is a required property"),
        (lambda so: so["spec"]["triggers"][0]["metadata"].update(listLenght="5"), "not a parameter of KEDA"),
        (lambda so: so["spec"]["triggers"][0]["metadata"].update(password="hunter2"), "a secret in plain metadata"),
        (lambda so: so["spec"]["triggers"][0]["metadata"].update(databaseIndex="zero"), "not an integer"),
        (lambda so: so["metadata"].update(labelz={}), "'labelz' was unexpected"),
        (lambda so: so.update(apiVersion="keda.sh/v2"), "not served by the vendored CRDs"),
    ],
    ids=[
        "integer-list-length",
        "unknown-trigger-field",
        "unknown-spec-field",
        "min-over-max",
        "missing-target",
        "misspelt-scaler-parameter",
        "password-in-metadata",
        "non-integer-parameter",
        "unknown-metadata-field",
        "unknown-version",
    ],
)
def test_crd_validation_refuses_a_broken_scaled_object(manifests, change, expected):
    _, scaled = broken(manifests, "ScaledObject", "atrium-worker-payments")
    change(scaled)
    problems = chart.validate([scaled])
    assert any(expected in p for p in problems), problems


def test_vendored_prometheus_operator_crd_is_the_one_its_source_names():
    directory = chart.PROMETHEUS_OPERATOR_CRD_DIR
    source = (directory / "SOURCE.md").read_text()
    assert f"`v{chart.PROMETHEUS_OPERATOR_VERSION}`" in source
    for file in (*chart.PROMETHEUS_OPERATOR_CRD_FILES, "LICENSE", "NOTICE"):
        [digest] = re.findall(rf"\| `{re.escape(file)}` \|[^|]*\| `([0-9a-f]{{64}})` \|", source)
        assert hashlib.sha256((directory / file).read_bytes()).hexdigest() == digest


def test_service_monitor_validates_against_its_crd_and_selects_every_web_service(rendered):
    # given the large install, which turns the ServiceMonitor on
    [monitor] = [m for m in rendered["large"] if m["kind"] == "ServiceMonitor"]
    assert chart.validate([monitor]) == []
    assert policy.service_monitor_problems(rendered["large"]) == []

    # then a broken one is refused by the CRD, and one that misses the Services by the policy
    typo = copy.deepcopy(monitor)
    typo["spec"]["endpoints"][0]["scrape_timeout"] = typo["spec"]["endpoints"][0].pop("scrapeTimeout")
    assert any("'scrape_timeout' was unexpected" in p for p in chart.validate([typo]))
    bad_interval = copy.deepcopy(monitor)
    bad_interval["spec"]["endpoints"][0]["interval"] = "30 seconds"
    assert any("spec.endpoints.0.interval" in p for p in chart.validate([bad_interval]))
    misses = copy.deepcopy(rendered["large"])
    [monitor] = [m for m in misses if m["kind"] == "ServiceMonitor"]
    monitor["spec"]["selector"]["matchLabels"][policy.COMPONENT] = "worker"
    assert len(policy.service_monitor_problems(misses)) == 5  # portal, ledger, payments, webhooks, risk


def test_crd_schemas_are_closed_as_the_api_server_closes_them():
    # given a structural schema with each of the API server's extensions
    import jsonschema

    schema = chart._closed(
        {
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }
    )

    def valid(instance):
        return jsonschema.Draft202012Validator(schema).is_valid(instance)

    # then undeclared fields are unknown, except under preserve-unknown-fields or a declared map
    assert valid({"spec": {"size": 1}, "free": {"anything": [1]}, "labels": {"a": "b"}})
    assert not valid({"spec": {"size": 1, "colour": "red"}})
    assert not valid({"extra": 1})
    # int-or-string takes either, nothing else; nullable takes null, others do not
    assert valid({"port": 80})
    assert valid({"port": "http"})
    assert not valid({"port": True})
    assert valid({"note": None})
    assert not valid({"spec": None})


def test_crd_validation_refuses_a_broken_trigger_authentication(manifests):
    [auth] = copy.deepcopy([m for m in manifests if m["kind"] == "TriggerAuthentication"])
    assert chart.validate([auth]) == []
    auth["spec"]["secretTargetRef"][0]["paramter"] = auth["spec"]["secretTargetRef"][0].pop("parameter")
    assert any("'paramter' was unexpected" in p for p in chart.validate([auth]))


# --- policies --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", VALUES_SETS)
def test_every_policy_holds(rendered, label):
    values = chart.values_merged(values_files=VALUES_SETS[label])
    assert policy.policy(rendered[label], values) == []


@pytest.mark.parametrize(
    ("process", "change", "expected"),
    [
        ("worker-payments", lambda c: c["resources"].pop("limits"), "in resources.limits"),
        ("ledger", lambda c: c["resources"]["requests"].pop("memory"), "no memory in resources.requests"),
        ("beat", lambda c: c["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
        ("relay-ledger", lambda c: c["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEsc"),
        ("portal", lambda c: c["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop does not include"),
        ("jobs-monitor", lambda c: c["securityContext"].update(runAsUser=0), "runAsUser is 0"),
        ("webhooks", lambda c: c.update(volumeMounts=[]), "no volume mounted at /tmp"),
    ],
)
def test_container_policy_reports_a_breach(manifests, process, change, expected):
    copied, deployment = broken(manifests, "Deployment", f"atrium-{process}")
    change(container(deployment))
    problems = policy.containers_problems(copied)
    assert problems
    assert all(f"atrium-{process} " in p and expected in p for p in problems), problems


def test_non_root_may_come_from_the_pod_but_must_come_from_somewhere(manifests):
    copied, ledger = broken(manifests, "Deployment", "atrium-ledger")
    container(ledger)["securityContext"].pop("runAsNonRoot")
    assert policy.containers_problems(copied) == []  # the pod's securityContext still says it
    ledger["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")
    assert any("runAsNonRoot is not true" in p for p in policy.containers_problems(copied))


@pytest.mark.parametrize(
    ("process", "change", "expected"),
    [
        ("ledger", lambda c: c.pop("readinessProbe"), "readinessProbe is not an HTTP GET of /health/ready"),
        ("payments", lambda c: c["livenessProbe"]["httpGet"].update(path="/health/ready"), "livenessProbe is not"),
        ("portal", lambda c: c.pop("startupProbe"), "no startupProbe"),
        ("worker-ledger", lambda c: c.pop("livenessProbe"), "no livenessProbe"),
        ("beat", lambda c: c.pop("livenessProbe"), "no livenessProbe"),
    ],
)
def test_probe_policy_reports_a_missing_probe(manifests, process, change, expected):
    copied, deployment = broken(manifests, "Deployment", f"atrium-{process}")
    change(container(deployment))
    problems = policy.probes_problems(copied)
    assert problems
    assert all(expected in p for p in problems), problems


def test_probes_and_services_must_reach_a_declared_port(manifests):
    copied, ledger = broken(manifests, "Deployment", "atrium-ledger")
    container(ledger)["readinessProbe"]["httpGet"]["port"] = "web"
    assert policy.probes_problems(copied) == [
        "Deployment/atrium-ledger container ledger: readinessProbe probes port 'web', "
        "which the container does not declare"
    ]
    copied, service = broken(manifests, "Service", "atrium-ledger")
    service["spec"]["ports"][0]["targetPort"] = 8000
    assert policy.web_services_problems(copied) == [
        "Service/atrium-ledger: targetPort 8000 is no port of Deployment/atrium-ledger"
    ]


def test_jobs_need_a_deadline_instead_of_probes(manifests):
    copied, job = broken(manifests, "Job", "atrium-migrate-ledger")
    assert "livenessProbe" not in container(job)
    job["spec"].pop("activeDeadlineSeconds")
    assert policy.probes_problems(copied) == [
        "Job/atrium-migrate-ledger: a Job without activeDeadlineSeconds (no probe bounds it)"
    ]


def test_pods_roll_when_the_config_changes(manifests):
    def checksums(manifests):
        return {p.name: p.metadata["annotations"]["checksum/config"] for p in policy.pod_templates(manifests)}

    before, after = checksums(manifests), checksums(chart.render({"config": {"LOG_LEVEL": "DEBUG"}}))
    assert before.keys() == after.keys()
    assert all(before[name] != after[name] for name in before)

    copied, relay = broken(manifests, "Deployment", "atrium-relay-payments")
    relay["spec"]["template"]["metadata"]["annotations"].pop("checksum/config")
    assert policy.checksum_problems(copied) == [
        "Deployment/atrium-relay-payments: pod template has no checksum/config annotation"
    ]


def test_beat_is_one_replica_recreated(manifests):
    beat = find(manifests, "Deployment", "atrium-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"

    copied, beat = broken(manifests, "Deployment", "atrium-beat")
    beat["spec"]["replicas"] = 2
    beat["spec"]["strategy"] = {"type": "RollingUpdate"}
    assert policy.beat_problems(copied) == [
        "Deployment/atrium-beat: replicas is 2, not 1",
        "Deployment/atrium-beat: strategy is not Recreate",
    ]
    twin = copy.deepcopy(beat)
    twin["metadata"]["name"] = "atrium-beat-2"
    assert policy.beat_problems([*copied, twin]) == ["2 beat workloads (exactly one is allowed)"]


def test_every_queue_has_a_worker_and_a_scaled_object_on_its_list(manifests):
    from services.kit.queues import QUEUES

    scaled = {m["spec"]["scaleTargetRef"]["name"]: m for m in manifests if m["kind"] == "ScaledObject"}
    for queue in QUEUES:
        worker = find(manifests, "Deployment", f"atrium-worker-{queue}")
        assert container(worker)["args"] == [f"worker_{queue}"]
        [trigger] = scaled[worker["metadata"]["name"]]["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == queue
    assert policy.queues_problems(manifests) == []


def test_queue_policy_reports_a_missing_or_wrong_scaler(manifests):
    # a queue the chart does not know
    assert policy.queues_problems(manifests, queues=["payments", "reports"]) == [
        "queue reports: no worker Deployment (atrium.dev/process: worker_reports)"
    ]
    # a ScaledObject counting another list
    copied, scaled = broken(manifests, "ScaledObject", "atrium-worker-ledger")
    scaled["spec"]["triggers"][0]["metadata"]["listName"] = "celery"
    assert policy.queues_problems(copied) == ["queue ledger: ScaledObject/atrium-worker-ledger counts list 'celery'"]
    # no ScaledObject at all
    without = [m for m in manifests if m["metadata"]["name"] != "atrium-worker-audit" or m["kind"] != "ScaledObject"]
    assert policy.queues_problems(without) == [
        "queue audit: 0 ScaledObjects scale Deployment/atrium-worker-audit (one is expected)"
    ]


def test_without_keda_every_worker_has_replicas():
    values = {"keda": {"enabled": False}}
    manifests = chart.render(values)
    assert not [m for m in manifests if m["kind"] == "ScaledObject"]
    assert policy.queues_problems(manifests, scaled=policy.keda_queues(chart.values_merged(values))) == []
    assert policy.queues_problems(manifests)  # expecting KEDA, it is missed


def test_workers_outlive_their_longest_task(manifests):
    # given the limit the values set (the ConfigMap's CELERY_TASK_TIME_LIMIT), the one the workers run with
    values = chart.values_merged()
    limit = values["celery"]["taskTimeLimit"]
    workers = [pod for pod in policy.pod_templates(manifests) if pod.component == "worker"]
    assert len(workers) == len(values["workers"])
    for pod in workers:
        assert policy.task_time_limit(pod.spec["containers"][0], manifests) == limit
        assert pod.spec["terminationGracePeriodSeconds"] > limit
    assert policy.grace_problems(manifests) == []


def test_grace_policy_reports_a_task_limit_above_the_grace(manifests):
    # the grace period shortened under the limit
    copied, worker = broken(manifests, "Deployment", "atrium-worker-payments")
    worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 60
    assert policy.grace_problems(copied) == [
        f"Deployment/atrium-worker-payments: terminationGracePeriodSeconds 60 <= task time limit "
        f"{policy.task_time_limit(container(worker), copied)}"
    ]
    # the limit raised in the ConfigMap the workers read
    copied, config = broken(manifests, "ConfigMap", "atrium")
    config["data"]["CELERY_TASK_TIME_LIMIT"] = "600"
    assert any("task time limit 600" in p for p in policy.grace_problems(copied))
    # the limit raised through values.config: the chart refuses it, or the policy reports it, never silence
    try:
        raised = chart.render({"config": {"CELERY_TASK_TIME_LIMIT": "600"}})
    except Exception as refused:  # the chart's own guard
        assert "CELERY_TASK_TIME_LIMIT" in str(refused)  # noqa: PT017
    else:
        assert any("task time limit 600" in p for p in policy.grace_problems(raised))


def test_a_tasks_own_time_limit_counts_for_its_queue(manifests, tmp_path, monkeypatch):
    # given a ledger task declaring a 900 s hard limit of its own (above the workers' 300 s and their grace)
    source = '@app.task(name="ledger.rebuild", time_limit=900)\ndef rebuild():\n    pass\n'
    (tmp_path / "ledger.py").write_text(f"from workers.celery import app\n\n\n{source}")
    # and an audit task whose limit is a module constant (as workers/audit.py writes it)
    source = 'ARCHIVE_TIME_LIMIT = 30 * 60\n\n\n@app.task(name="audit.archive", time_limit=ARCHIVE_TIME_LIMIT)\n'
    (tmp_path / "audit.py").write_text(f"{source}def archive():\n    pass\n")
    assert policy.task_time_limits(tmp_path) == {"ledger": 900, "audit": 1800}
    # a limit it cannot read is an error, not a pass
    (tmp_path / "payments.py").write_text(
        '@app.task(name="payments.x", time_limit=settings.LIMIT)\ndef x():\n    pass\n'
    )
    with pytest.raises(ValueError, match=r"payments\.x's time_limit"):
        policy.task_time_limits(tmp_path)
    monkeypatch.setattr(policy, "task_time_limits", lambda: {"ledger": 900})

    # then only the ledger worker is reported
    grace = find(manifests, "Deployment", "atrium-worker-ledger")["spec"]["template"]["spec"]
    assert policy.grace_problems(manifests) == [
        f"Deployment/atrium-worker-ledger: terminationGracePeriodSeconds {grace['terminationGracePeriodSeconds']}"
        " <= task time limit 900"
    ]


def test_the_chart_refuses_a_grace_shorter_than_the_task_limit():
    with pytest.raises(Exception, match=r"terminationGracePeriodSeconds \(200\) must exceed"):
        chart.render({"workers": {"payments": {"terminationGracePeriodSeconds": 200}}})


def test_migrations_are_pre_install_and_pre_upgrade_hooks_per_service(manifests):
    for service in chart.dependencies_read()["services"]:
        job = find(manifests, "Job", f"atrium-migrate-{service}")
        assert container(job)["args"][:3] == ["manage", service, "migrate"]
        assert {"pre-install", "pre-upgrade"} <= set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert policy.migrations_problems(manifests) == []

    copied, job = broken(manifests, "Job", "atrium-migrate-payments")
    job["metadata"]["annotations"]["helm.sh/hook"] = "post-install"
    assert policy.migrations_problems(copied) == [
        "Job/atrium-migrate-payments: helm.sh/hook is ['post-install'], not pre-install,pre-upgrade"
    ]
    without = [m for m in manifests if m["metadata"]["name"] != "atrium-migrate-webhooks"]
    assert policy.migrations_problems(without) == ["webhooks: 0 migration Jobs (one is expected)"]


def test_every_container_runs_a_procfile_process(manifests):
    copied, relay = broken(manifests, "Deployment", "atrium-relay-ledger")
    container(relay)["args"] = ["relay-ledger"]
    [problem] = policy.processes_problems(copied)
    assert problem.startswith("Deployment/atrium-relay-ledger container ")
    assert problem.endswith("args ['relay-ledger'] name no Procfile process")
    assert policy.processes_problems(manifests) == []


def test_a_service_selector_must_not_reach_the_workers(manifests):
    copied, service = broken(manifests, "Service", "atrium-payments")
    service["spec"]["selector"].pop(policy.COMPONENT)
    service["spec"]["selector"].pop(policy.PROCESS, None)
    problems = policy.web_services_problems(copied)
    assert problems
    assert "Service/atrium-payments selects other pods too" in problems[0]
    assert "atrium-worker-payments" in problems[0]


def test_hpas_and_disruption_budgets_leave_room_to_scale_and_drain(rendered):
    # given the large install: CPU HPAs on every web Deployment, PDBs with minAvailable 2
    large = rendered["large"]
    hpas = [m for m in large if m["kind"] == "HorizontalPodAutoscaler"]
    assert {m["spec"]["scaleTargetRef"]["name"] for m in hpas} == {
        f"atrium-{service}" for service in chart.dependencies_read()["services"]
    }
    assert policy.scaling_problems(large) == []

    # then a Deployment that states replicas under an HPA, an HPA with min > max, a PDB no drain can satisfy
    copied, ledger = broken(large, "Deployment", "atrium-ledger")
    ledger["spec"]["replicas"] = 3
    find(copied, "HorizontalPodAutoscaler", "atrium-payments")["spec"]["minReplicas"] = 20
    find(copied, "PodDisruptionBudget", "atrium-portal")["spec"]["minAvailable"] = 3
    problems = policy.scaling_problems(copied)
    assert len(problems) == 3, problems
    assert "Deployment/atrium-ledger sets replicas" in problems[0]
    assert "minReplicas 20 > maxReplicas" in problems[1]
    assert "PodDisruptionBudget/atrium-portal: minAvailable 3 >=" in problems[2]

    # and without an HPA, replicas are the floor: a single replica with minAvailable 1 never drains
    copied, pdb = broken(rendered["small"], "PodDisruptionBudget", "atrium-ledger")
    pdb["spec"] = {"minAvailable": 1, "selector": pdb["spec"]["selector"]}
    assert find(copied, "Deployment", "atrium-ledger")["spec"]["replicas"] == 1
    assert policy.scaling_problems(copied) == [
        "PodDisruptionBudget/atrium-ledger: minAvailable 1 >= Deployment/atrium-ledger's 1 replica(s): "
        "no pod may ever be evicted"
    ]


# --- NetworkPolicies and the dependency graph ------------------------------------------------------------------------


def test_the_charts_dependency_file_is_the_manifests_graph():
    assert chart.dependencies_drift() == []
    assert chart.dependencies_read() == chart.dependencies_from_manifests()
    assert chart.DEPENDENCIES_FILE.read_text() == chart.dependencies_text(chart.dependencies_from_manifests())


def test_a_manifest_changed_without_sync_is_drift(monkeypatch, tmp_path):
    # given the payments manifest no longer calls the ledger
    from services.payments.manifest import MANIFEST

    monkeypatch.setitem(MANIFEST, "dependencies", [d for d in MANIFEST["dependencies"] if d.get("service") != "ledger"])

    # then the chart's file is reported, naming the service
    [problem] = chart.dependencies_drift()
    assert problem.startswith("deploy/helm/atrium/files/dependencies.yaml: payments is")
    # and sync (here to a copy) brings it back in step
    copy_path = tmp_path / "dependencies.yaml"
    assert chart.dependencies_sync(copy_path) is True
    assert chart.dependencies_drift(copy_path) == []
    assert chart.dependencies_sync(copy_path) is False
    others = [d["service"] for d in MANIFEST["dependencies"] if "service" in d]  # (ledger left out above)
    assert yaml.safe_load(copy_path.read_text())["services"]["payments"]["services"] == others


def web_pod(manifests, service):
    return next(
        p for p in policy.pod_templates(manifests) if p.component == "web" and p.labels[policy.PART_OF] == service
    )


def pod(manifests, process):
    return next(p for p in policy.pod_templates(manifests) if p.labels.get(policy.PROCESS) == process)


def test_the_ledger_admits_payments_the_portal_and_its_own_pods_but_not_webhooks(manifests):
    ledger = policy.pod_peer(web_pod(manifests, "ledger"))
    port = ledger.ports["http"]

    def admits(process):
        return policy.network_admits(manifests, policy.pod_peer(pod(manifests, process)), ledger, port)

    for caller in ("payments", "worker_payments", "relay_payments", "portal", "beat", "worker_ledger", "relay_ledger"):
        assert admits(caller), caller
    for stranger in ("webhooks", "worker_webhooks", "dispatcher_webhooks", "relay_webhooks"):
        assert not admits(stranger), stranger


def test_payments_is_called_by_no_service_but_the_portal(manifests):
    payments = policy.pod_peer(web_pod(manifests, "payments"))
    port = payments.ports["http"]
    for process, expected in [("portal", True), ("worker_payments", True), ("ledger", False), ("webhooks", False)]:
        assert policy.network_admits(manifests, policy.pod_peer(pod(manifests, process)), payments, port) is expected


def test_two_releases_in_one_namespace_do_not_admit_each_other():
    # given two installs side by side (blue/green) in one namespace
    blue, green = chart.render(release="blue"), chart.render(release="green")
    both = blue + green
    ledger = policy.pod_peer(web_pod(blue, "ledger"))

    # then blue's ledger admits blue's payments, not green's
    assert policy.network_admits(both, policy.pod_peer(pod(blue, "payments")), ledger, ledger.ports["http"])
    assert not policy.network_admits(both, policy.pod_peer(pod(green, "payments")), ledger, ledger.ports["http"])


def test_outsiders_reach_only_what_the_values_allow(manifests):
    ledger = policy.pod_peer(web_pod(manifests, "ledger"))
    worker = policy.pod_peer(pod(manifests, "worker_ledger"))
    outsiders = policy.outsiders_from_values(chart.values_merged())
    for peer in outsiders.values():
        assert policy.network_admits(manifests, peer, ledger, ledger.ports["http"])
        assert not policy.network_admits(manifests, peer, worker)
    stranger = policy.Peer(labels={"app.kubernetes.io/name": "atrium", policy.PART_OF: "payments"}, namespace="other")
    assert not policy.network_admits(manifests, stranger, ledger, ledger.ports["http"])


def test_network_policy_check_reports_drift_from_the_graph(manifests):
    # given the graph says webhooks calls the ledger (the manifests changed, the policies did not)
    graph = copy.deepcopy(chart.dependencies_read())
    graph["services"]["webhooks"]["services"].append("ledger")
    problems = policy.network_problems(manifests, graph)
    assert problems
    assert all("Deployment/atrium-ledger refuses" in p and "webhooks" in p for p in problems), problems

    # given a policy that lost its part-of rule, admitting every Atrium pod
    copied, netpol = broken(manifests, "NetworkPolicy", "atrium-ledger")
    for peer in netpol["spec"]["ingress"][0]["from"]:
        if "podSelector" in peer:
            expressions = peer["podSelector"]["matchExpressions"]
            peer["podSelector"]["matchExpressions"] = [e for e in expressions if e["key"] != policy.PART_OF]
    problems = policy.network_problems(copied)
    assert any("Deployment/atrium-ledger admits Deployment/atrium-webhooks" in p for p in problems), problems

    # without any NetworkPolicy
    assert policy.network_problems([m for m in manifests if m["kind"] != "NetworkPolicy"]) == [
        "no NetworkPolicy is rendered"
    ]


def test_network_evaluator_follows_kubernetes_semantics():
    target = policy.Peer(labels={"app": "db"}, ports={"pg": 5432})
    source = policy.Peer(labels={"app": "api"})

    def netpol(spec):
        return {
            "kind": "NetworkPolicy",
            "metadata": {"name": "p"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, **spec},
        }

    assert policy.network_admits([], source, target, 5432)  # no policy selects it
    assert not policy.network_admits([netpol({"policyTypes": ["Ingress"]})], source, target, 5432)  # deny all
    allow_api = netpol(
        {"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": "pg"}]}]}
    )
    assert policy.network_admits([allow_api], source, target, 5432)
    assert not policy.network_admits([allow_api], source, target, 8080)  # another port
    assert not policy.network_admits([allow_api], policy.Peer(labels={"app": "api"}, namespace="x"), target, 5432)
    egress_only = netpol({"policyTypes": ["Egress"]})
    assert policy.network_admits([egress_only], source, target, 5432)


def test_check_command_passes_on_the_chart(capsys):
    assert chart_cli.main(["check", "-f", str(chart.CHART_DIR / "values-small.yaml")]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
