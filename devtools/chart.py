"""The Helm chart (deploy/helm/atrium), checked offline: rendered and linted by Helm's own engine, every manifest
validated against the Kubernetes OpenAPI schemas and KEDA's CRDs, and the chart's policies checked.

``./bin/atrium chart sync | check | render [-f values.yaml]… [--release NAME] [--namespace NS]`` (devtools/chart_cli.py)

- ``sync`` writes the chart's copy of the service dependency graph (``files/dependencies.yaml``, from which the
  NetworkPolicies are made) from the catalog manifests (``portal/manifest.py``, ``services/*/manifest.py`` or
  ``services/*/manifest.json``).
- ``check`` fails when that copy differs from the manifests, or when the chart with its default values,
  ``values-small.yaml`` or ``values-large.yaml`` does not render, lint, validate or meet the policies.
- ``render`` prints the manifests (a YAML stream), for a look or for ``kubectl apply --dry-run=server``.

Helm runs in-process (PyPI ``helm-python-sdk``: Helm's Go SDK as a C library, no binary, no cluster); the Kubernetes
schemas are ``kubernetes-validate``'s, strict (an unknown field is an error, as ``kubectl apply``'s default
``--validate=strict`` makes it); the KEDA objects are checked against the CRDs vendored in ``deploy/vendor/keda``.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "atrium"
DEPENDENCIES_FILE = CHART_DIR / "files" / "dependencies.yaml"
# The worked examples beside values.yaml that `check` (and the tests) render too.
EXAMPLE_VALUES = ("values-small.yaml", "values-large.yaml")
KEDA_VERSION = "2.20.2"
KEDA_CRD_DIR = REPO_ROOT / "deploy" / "vendor" / "keda" / KEDA_VERSION
KEDA_CRD_FILES = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")
PROMETHEUS_OPERATOR_VERSION = "0.93.0"
PROMETHEUS_OPERATOR_CRD_DIR = REPO_ROOT / "deploy" / "vendor" / "prometheus-operator" / PROMETHEUS_OPERATOR_VERSION
PROMETHEUS_OPERATOR_CRD_FILES = ("monitoring.coreos.com_servicemonitors.yaml",)
# API group → (what it is, its CRD files): the custom resources the chart renders, checked against these.
VENDORED_CRDS = {
    "keda.sh": (f"KEDA {KEDA_VERSION}", [KEDA_CRD_DIR / name for name in KEDA_CRD_FILES]),
    "monitoring.coreos.com": (
        f"Prometheus Operator {PROMETHEUS_OPERATOR_VERSION}",
        [PROMETHEUS_OPERATOR_CRD_DIR / name for name in PROMETHEUS_OPERATOR_CRD_FILES],
    ),
}
# Kubernetes minor versions every manifest is validated against: the oldest one still in managed providers'
# extended support and the newest kubernetes-validate bundles (1.37). The chart's kubeVersion floor is older
# still; a team on an older cluster adds its version here.
K8S_VERSIONS = ("1.33", "1.37")

RELEASE = "atrium"
NAMESPACE = "atrium"


# --- the dependency graph ----------------------------------------------------------------------------------------

_DEPENDENCIES_HEADER = """\
# Which Atrium service calls which: copied from the catalog manifests' "dependencies" (portal/manifest.py,
# services/<service>/manifest.py or .json). Written by `./bin/atrium chart sync`; a test fails when it differs from
# the manifests, so edit the manifests, then sync. The NetworkPolicies are generated from it.
#
# Format (YAML, sorted by service name, lists in the manifest's order):
#   services:
#     <service>:                  # the manifest's part_of (portal, ledger, payments, webhooks, risk)
#       services: [<service>, …]  # dependencies with {"service": X}: the services this one calls
#       resources: [<name>, …]    # dependencies with {"resource": X} (postgres, redis): outside the chart
"""


def catalog_manifests() -> dict[str, dict[str, Any]]:
    """Every web service's catalog manifest, by its ``part_of``: the portal's and each
    ``services/<name>/manifest.py`` (``MANIFEST``), or ``services/<name>/manifest.json`` for a service in another
    language (the same fields, language neutral)."""
    found = [importlib.import_module("portal.manifest").MANIFEST]
    for directory in sorted(path for path in (REPO_ROOT / "services").iterdir() if path.is_dir()):
        if (directory / "manifest.py").is_file():
            found.append(importlib.import_module(f"services.{directory.name}.manifest").MANIFEST)
        elif (directory / "manifest.json").is_file():
            found.append(json.loads((directory / "manifest.json").read_text()))
    return {manifest["part_of"]: manifest for manifest in found}


def dependencies_from_manifests(manifests: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The dependency graph as the chart keeps it: ``{"services": {service: {"services": [...], "resources":
    [...]}}}``, services sorted by name, each list in its manifest's order."""
    manifests = catalog_manifests() if manifests is None else manifests
    graph: dict[str, Any] = {}
    for name in sorted(manifests):
        entries = manifests[name].get("dependencies", [])
        graph[name] = {
            "services": [entry["service"] for entry in entries if "service" in entry],
            "resources": [entry["resource"] for entry in entries if "resource" in entry],
        }
    return {"services": graph}


def dependencies_text(graph: dict[str, Any]) -> str:
    """``graph`` as the file's text (header comment, flow-style lists)."""
    lines = [_DEPENDENCIES_HEADER.rstrip("\n"), "services:"]
    for name, entry in graph["services"].items():
        lines.append(f"  {name}:")
        for key in ("services", "resources"):
            lines.append(f"    {key}: [{', '.join(entry[key])}]")
    return "\n".join(lines) + "\n"


def dependencies_read(path: Path = DEPENDENCIES_FILE) -> dict[str, Any]:
    """The chart's copy of the graph (empty when the file is missing)."""
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def dependencies_drift(path: Path = DEPENDENCIES_FILE) -> list[str]:
    """How the chart's copy differs from the manifests, one line per service (empty when in step)."""
    expected = dependencies_from_manifests()["services"]
    actual = (dependencies_read(path) or {}).get("services") or {}
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if expected.get(name) != actual.get(name):
            problems.append(
                f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}: {name} is "
                f"{actual.get(name)!r}, the manifests say {expected.get(name)!r} (run `./bin/atrium chart sync`)"
            )
    return problems


def dependencies_sync(path: Path = DEPENDENCIES_FILE) -> bool:
    """Write the graph from the manifests; whether the file changed."""
    text = dependencies_text(dependencies_from_manifests())
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


# --- rendering and linting ----------------------------------------------------------------------------------------


def values_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base`` as Helm layers ``-f`` files: maps merge key by key, anything else replaces (a
    ``null`` is kept, and Helm then deletes that key from the chart's defaults)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = values_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def values_load(values: dict[str, Any] | None = None, values_files: Iterable[Path] = ()) -> dict[str, Any]:
    """The user values of one release: each file in order (a relative name is looked up beside the chart's
    values.yaml), then ``values``."""
    merged: dict[str, Any] = {}
    for file in values_files:
        path = Path(file)
        if not path.is_absolute() and not path.exists():
            path = CHART_DIR / path
        merged = values_merge(merged, yaml.safe_load(path.read_text()) or {})
    return values_merge(merged, values or {})


def values_merged(
    values: dict[str, Any] | None = None, *, values_files: Iterable[Path] = (), chart_dir: Path = CHART_DIR
) -> dict[str, Any]:
    """The values a release really gets: the chart's defaults coalesced with the user values by Helm."""
    import helm_python

    with helm_python.Chart.load(chart_dir) as chart:
        return chart.merge_values(values_load(values, values_files))


def render_sources(
    values: dict[str, Any] | None = None,
    *,
    values_files: Iterable[Path] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    chart_dir: Path = CHART_DIR,
) -> list[tuple[str, dict[str, Any]]]:
    """``(template path, manifest)`` for every manifest the chart renders (hooks included), in template order."""
    import helm_python

    user_values = values_load(values, values_files)
    with helm_python.Chart.load(chart_dir) as chart:
        rendered = chart.render(user_values, name=release, namespace=namespace, is_install=True)
    documents = []
    for template in sorted(rendered):
        if not template.endswith((".yaml", ".yml", ".json")):
            continue  # NOTES.txt
        for document in yaml.safe_load_all(rendered[template]):
            if document:
                documents.append((template, document))
    return documents


def render(
    values: dict[str, Any] | None = None,
    *,
    values_files: Sequence[Path] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """Every manifest the chart renders with ``values`` (over ``values_files``, over the chart's defaults), hooks
    included, as dicts. Helm's engine, offline: ``lookup`` finds nothing, no cluster is asked."""
    return [doc for _, doc in render_sources(values, values_files=values_files, release=release, namespace=namespace)]


def lint(
    values: dict[str, Any] | None = None,
    *,
    values_files: Sequence[Path] = (),
    namespace: str = NAMESPACE,
    kube_version: str | None = None,
    chart_dir: Path = CHART_DIR,
) -> list[str]:
    """``helm lint --strict``'s warnings and errors (informational notes left out); empty when clean."""
    import helm_python

    report = helm_python.lint(
        str(chart_dir),
        values_load(values, values_files),
        strict=True,
        namespace=namespace,
        kube_version=f"v{kube_version}.0" if kube_version else None,
    )
    findings = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    findings += [error for error in report.get("errors", []) if not any(error in f for f in findings)]
    return findings


# --- schema validation --------------------------------------------------------------------------------------------


def name_of(manifest: dict[str, Any]) -> str:
    """``Kind/name`` of a manifest, for messages."""
    return f"{manifest.get('kind')}/{(manifest.get('metadata') or {}).get('name')}"


def validate(manifests: Iterable[dict[str, Any]], k8s_versions: Sequence[str] = K8S_VERSIONS) -> list[str]:
    """Problems with ``manifests`` as an API server would see them (empty when every one is valid).

    Built-in kinds: kubernetes-validate's strict schemas for each of ``k8s_versions`` (an unknown field, a wrong
    type or a missing required field is refused; a kind or apiVersion the version does not serve is refused too),
    plus the object-name, label and selector rules the schemas cannot state. KEDA's and the Prometheus Operator's
    kinds: the vendored CRDs' schemas, closed as the API server closes them. Any other custom kind is refused:
    nothing could check it.
    """
    import kubernetes_validate

    problems = []
    for manifest in manifests:
        if not isinstance(manifest, dict) or "apiVersion" not in manifest or "kind" not in manifest:
            problems.append(f"{str(manifest)[:80]}: not a Kubernetes object (no apiVersion/kind)")
            continue
        label = name_of(manifest)
        problems += [f"{label}: {problem}" for problem in _metadata_problems(manifest)]
        group = manifest["apiVersion"].rpartition("/")[0]
        if group in VENDORED_CRDS:
            source = VENDORED_CRDS[group][0]
            problems += [f"{label} ({source} CRD): {p}" for p in crd_problems(manifest, k8s_versions[-1])]
            continue
        for version in k8s_versions:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path) or "(root)"
                problems.append(f"{label} (Kubernetes {version}): {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problems.append(f"{label} (Kubernetes {version}): {error.message}")
    return problems


# The API server's rules for names and labels (k8s.io/apimachinery/pkg/util/validation), which no OpenAPI schema has.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123_LABEL = re.compile(r"^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Kinds whose names must be DNS-1035 labels (they become DNS names themselves).
_DNS_1035_KINDS = {"Service"}


def _key_problems(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        problems.append(f"key {key!r}: prefix is not a DNS subdomain")
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        problems.append(f"key {key!r}: name is not a qualified name (at most 63 characters, alphanumeric ends)")
    return problems


def _labels_problems(labels: Any, where: str) -> list[str]:
    if not isinstance(labels, dict):
        return []
    problems = []
    for key, value in labels.items():
        problems += [f"{where}: {p}" for p in _key_problems(str(key))]
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"{where}: {key}={value!r} is not a valid label value")
    return problems


def _metadata_problems(manifest: dict[str, Any]) -> list[str]:
    metadata = manifest.get("metadata") or {}
    name = metadata.get("name")
    problems = []
    if not isinstance(name, str) or not name:
        problems.append("metadata.name is missing")
    elif manifest["kind"] in _DNS_1035_KINDS:
        if len(name) > 63 or not _DNS_1035_LABEL.match(name):
            problems.append(f"metadata.name {name!r} is not a DNS-1035 label (at most 63 characters)")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name {name!r} is not a DNS subdomain")
    problems += _labels_problems(metadata.get("labels"), "metadata.labels")
    for key in metadata.get("annotations") or {}:
        problems += [f"metadata.annotations: {p}" for p in _key_problems(str(key))]
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
    if manifest["kind"] == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template") if isinstance(spec.get("template"), dict) else None
    if template is not None:
        names = []
        for kind in ("initContainers", "containers"):
            for index, container in enumerate((template.get("spec") or {}).get(kind) or []):
                names.append(container.get("name"))
                if not isinstance(container.get("image"), str) or not container["image"].strip():
                    problems.append(f"spec.template.spec.{kind}.{index}.image: required (empty or missing)")
                if not isinstance(container.get("name"), str) or not _DNS_1123_LABEL.match(container["name"]):
                    problems.append(f"spec.template.spec.{kind}.{index}.name: not a DNS-1123 label")
        if len(names) != len(set(names)):
            problems.append("spec.template.spec: two containers share a name")
        pod_labels = (template.get("metadata") or {}).get("labels") or {}
        problems += _labels_problems(pod_labels, "spec.template.metadata.labels")
        selector = spec.get("selector")
        match = selector.get("matchLabels") if isinstance(selector, dict) else None
        if manifest["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}:
            if not match:
                problems.append("spec.selector.matchLabels is empty")
            elif any(pod_labels.get(k) != v for k, v in match.items()):
                problems.append("spec.selector does not match spec.template.metadata.labels")
    return problems


# --- custom resources (KEDA, Prometheus Operator) against their CRDs -----------------------------------------------


def _closed(schema: Any) -> Any:
    """A CRD's structural schema as a JSON Schema that refuses what the API server refuses: an object field the
    schema does not declare is unknown (the API server prunes it, and refuses it under ``kubectl apply``'s strict
    field validation) unless the node says ``x-kubernetes-preserve-unknown-fields``; ``x-kubernetes-int-or-string``
    means an integer or a string; ``nullable`` admits null."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = {key: _closed(value) for key, value in schema.items() if key not in {"description"}}
    for keyword in ("properties", "patternProperties"):
        if isinstance(schema.get(keyword), dict):
            node[keyword] = {name: _closed(sub) for name, sub in schema[keyword].items()}
    if schema.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    for bound in ("Minimum", "Maximum"):  # OpenAPI 3.0's boolean exclusive bounds, as JSON Schema 2020-12 says them
        if node.get(f"exclusive{bound}") is True and bound.lower() in node:
            node[f"exclusive{bound}"] = node.pop(bound.lower())
        elif node.get(f"exclusive{bound}") is False:
            node.pop(f"exclusive{bound}")
    is_object = node.get("type") == "object" or "properties" in node
    if is_object and not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


@cache
def _crds() -> dict[tuple[str, str], tuple[dict[str, Any], list[str]]]:
    """``(apiVersion, kind)`` → (the served version's closed schema, its CEL rules) for each vendored CRD."""
    crds: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {}
    for file in [file for _, files in VENDORED_CRDS.values() for file in files]:
        crd = yaml.safe_load(file.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            raw = version["schema"]["openAPIV3Schema"]
            schema = _closed(raw)
            schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema["properties"]["metadata"] = {
                "$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
            }
            schema["required"] = sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])})
            crds[(f"{group}/{version['name']}", kind)] = (schema, list(_cel_rules(raw)))
    return crds


def _cel_rules(schema: Any, path: tuple[str, ...] = ()) -> Iterable[str]:
    """``"<path>: <rule>"`` for every ``x-kubernetes-validations`` rule in a CRD schema."""
    if isinstance(schema, dict):
        for rule in schema.get("x-kubernetes-validations") or []:
            yield f"{'.'.join(path) or '(root)'}: {rule['rule']}"
        for name, sub in (schema.get("properties") or {}).items():
            yield from _cel_rules(sub, (*path, name))
        if isinstance(schema.get("items"), dict):
            yield from _cel_rules(schema["items"], (*path, "*"))
        if isinstance(schema.get("additionalProperties"), dict):
            yield from _cel_rules(schema["additionalProperties"], (*path, "*"))


def _scaled_object_replicas(manifest: dict[str, Any]) -> list[str]:
    spec = manifest.get("spec") or {}
    low, high = spec.get("minReplicaCount"), spec.get("maxReplicaCount", 100)
    if isinstance(low, int) and isinstance(high, int) and low > high:
        return ["spec: minReplicaCount must be less than or equal to maxReplicaCount"]
    return []


# The CEL rules of the vendored CRDs, each checked in Python (JSON Schema cannot say them); a CRD with any other rule
# is refused until its rule is added here.
_CEL_CHECKS = {
    (
        "ScaledObject",
        "spec: !has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? "
        "self.maxReplicaCount : 100)",
    ): _scaled_object_replicas,
}


# The redis scaler's trigger metadata in KEDA 2.20.2 (pkg/scalers/redis_scaler.go's `keda:"name=…, order=…"` tags:
# names read from triggerMetadata, and `<name>FromEnv` for those also read from the container's environment), with
# the type each is parsed as. KEDA ignores any other key (a misspelt listLength silently means the default, 5), so
# one is refused here as KEDA_CHECK_UNEXPECTED_SCALERS_PARAMS=enabled would report it. Passwords never go in
# metadata (the object is readable by anyone who can list ScaledObjects): a TriggerAuthentication carries them.
_REDIS_INTEGERS = {"listLength", "activationListLength", "databaseIndex"}
_REDIS_BOOLEANS = {"enableTLS", "unsafeSsl"}
_REDIS_FROM_ENV = {"address", "addresses", "host", "hosts", "port", "ports", "username", "password"}
_REDIS_FROM_ENV |= {"sentinelMaster", "sentinelPassword", "sentinelUsername"}
REDIS_SCALER_PARAMETERS = frozenset(
    {"listName", "address", "addresses", "host", "hosts", "port", "ports", "username", "sentinelMaster"}
    | {"sentinelUsername"}
    | _REDIS_INTEGERS
    | _REDIS_BOOLEANS
    | {f"{name}FromEnv" for name in _REDIS_FROM_ENV}
)
_REDIS_SECRETS = {"password", "sentinelPassword"}


def _redis_triggers(manifest: dict[str, Any]) -> list[str]:
    problems = []
    for index, trigger in enumerate((manifest.get("spec") or {}).get("triggers") or []):
        if not isinstance(trigger, dict) or trigger.get("type") != "redis":
            continue
        where = f"spec.triggers.{index}.metadata"
        metadata = trigger.get("metadata") if isinstance(trigger.get("metadata"), dict) else {}
        for key, value in metadata.items():
            if key in _REDIS_SECRETS:
                problems.append(f"{where}.{key}: a secret in plain metadata (use a TriggerAuthentication)")
            elif key not in REDIS_SCALER_PARAMETERS:
                problems.append(f"{where}.{key}: not a parameter of KEDA {KEDA_VERSION}'s redis scaler")
            elif key in _REDIS_INTEGERS and not re.fullmatch(r"-?\d+", str(value)):
                problems.append(f"{where}.{key}: {value!r} is not an integer")
            elif key in _REDIS_BOOLEANS and str(value).lower() not in {"true", "false"}:
                problems.append(f"{where}.{key}: {value!r} is not true or false")
        if "listName" not in metadata:
            problems.append(f"{where}: no listName")
    return problems


@cache
def _metadata_registry(k8s_version: str) -> Any:
    from kubernetes_validate.utils import all_versions, major_minor, schema_contents
    from referencing import Registry, Resource

    version = [v for v in all_versions() if major_minor(v) == k8s_version][-1]
    definitions = schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", k8s_version)
    return Resource.from_contents(definitions) @ Registry()


def crd_problems(manifest: dict[str, Any], k8s_version: str = K8S_VERSIONS[-1]) -> list[str]:
    """Problems with a custom resource against its vendored CRD (its metadata against Kubernetes' ObjectMeta)."""
    import jsonschema

    found = _crds().get((manifest.get("apiVersion"), manifest.get("kind")))
    if found is None:
        return [f"{manifest.get('apiVersion')} {manifest.get('kind')} is not served by the vendored CRDs"]
    schema, rules = found
    validator = jsonschema.Draft202012Validator(schema, registry=_metadata_registry(k8s_version))
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    ]
    for rule in rules:
        check = _CEL_CHECKS.get((manifest["kind"], rule))
        if check is None:
            problems.append(f"the CRD's rule {rule!r} is not checked here: add it to devtools/chart.py _CEL_CHECKS")
        else:
            problems += check(manifest)
    if manifest.get("kind") == "ScaledObject":
        problems += _redis_triggers(manifest)
    return problems
