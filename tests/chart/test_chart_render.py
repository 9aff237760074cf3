"""Every scenario renders, and every rendered object passes strict Kubernetes schema validation."""

from collections import Counter

import jsonschema
import kubernetes_validate
import pytest

from chartlib import K8S_VERSION, NAMESPACE, SCENARIOS, render

# Kinds whose schema is not part of Kubernetes; each is checked by a schema of our own below,
# never skipped.
CUSTOM_KINDS = {"ServiceMonitor"}

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

_labels = {"type": "object", "additionalProperties": {"type": "string"}}
_duration = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}

# The fields of monitoring.coreos.com/v1 ServiceMonitor that the chart renders, closed to
# anything else (additionalProperties false), after the Prometheus Operator's CRD.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _labels},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _labels},
                    "required": ["matchLabels"],
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _duration,
                            "scrapeTimeout": _duration,
                            "metricRelabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "sourceLabels": {"type": "array", "items": {"type": "string"}},
                                        "separator": {"type": "string"},
                                        "targetLabel": {"type": "string"},
                                        "regex": {"type": "string"},
                                        "modulus": {"type": "integer"},
                                        "replacement": {"type": "string"},
                                        "action": {
                                            "enum": ["replace", "keep", "drop", "hashmod", "labelmap",
                                                     "labeldrop", "labelkeep", "lowercase", "uppercase",
                                                     "keepequal", "dropequal"]
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


# The current Kubernetes, and the oldest the chart supports (Chart.yaml kubeVersion >=1.30).
VERSIONS = [K8S_VERSION, "1.30.0"]


def validate(doc: dict, version: str = K8S_VERSION) -> None:
    if doc["kind"] in CUSTOM_KINDS:
        jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA).validate(doc)
        return
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_validates_strictly(scenario, version):
    manifests = render(SCENARIOS[scenario])
    assert manifests.docs, "nothing rendered"
    kinds = Counter()
    for doc in manifests:
        try:
            validate(doc, version)
        except Exception as e:  # noqa: BLE001 - report which object failed and why
            pytest.fail(f"{doc['kind']}/{doc['metadata'].get('name')} fails validation for Kubernetes {version}: {e}")
        kinds[doc["kind"]] += 1
    # The custom kinds were checked only where they render, and then by our schema.
    assert set(kinds) - CUSTOM_KINDS, kinds


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_objects_are_named_labelled_and_namespaced(scenario):
    manifests = render(SCENARIOS[scenario])
    seen = Counter((d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in manifests)
    dupes = [k for k, n in seen.items() if n > 1]
    assert not dupes, f"duplicate objects: {dupes}"
    watch = SCENARIOS[scenario].get("operator", {}).get("watchNamespace")
    monitor_ns = SCENARIOS[scenario].get("metrics", {}).get("serviceMonitor", {}).get("namespace")
    for d in manifests:
        meta = d["metadata"]
        labels = meta.get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{d['kind']}/{meta['name']} lacks label {key}"
        if d["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, f"cluster-scoped {d['kind']}/{meta['name']} has a namespace"
        else:
            allowed = {NAMESPACE, watch, monitor_ns} - {None, "", "all"}
            assert meta.get("namespace") in allowed, f"{d['kind']}/{meta['name']} in namespace {meta.get('namespace')}"


def test_strict_validation_is_not_a_no_op():
    """The validator really rejects an unknown field and a wrong type."""
    good = render().server
    bad_field = {**good, "spec": {**good["spec"], "replicaz": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad_field, K8S_VERSION, strict=True)
    bad_type = {**good, "spec": {**good["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad_type, K8S_VERSION, strict=True)
    monitor = render(SCENARIOS["servicemonitor"]).one("ServiceMonitor")
    bad_monitor = {**monitor, "spec": {**monitor["spec"], "endpoint": []}}
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_monitor)


def test_service_monitor_only_renders_when_enabled():
    render().none("ServiceMonitor")
    monitor = render(SCENARIOS["servicemonitor"]).one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
