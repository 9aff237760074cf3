"""Helpers for the chart tests: run helm, parse what it renders, the value scenarios.

Tools come from <repo>/.tools (scripts/install-chart-tools.sh) or PATH; a missing tool fails
the test that needs it, it is never skipped (conftest.py fails the run on any skip).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rollcall"
TOOLS_BIN = ROOT / ".tools" / "bin"

# Kubernetes version the rendered manifests are validated against (kubernetes-validate pins
# its schemas; 1.35 is the newest of the pinned 1.35.0 release).
K8S_VERSION = "1.35.0"

RELEASE = "rc"
NAMESPACE = "presence"
# Release name "rc" does not contain the chart name: objects are "rc-rollcall-*".
FULLNAME = f"{RELEASE}-rollcall"

# Fixed keys so that renders are deterministic where a test compares two of them.
FIXED_SECRET = {"secret": {"apiKey": "test-api-key", "tokenHmacSecretKey": "test-token-key"}}


def tool(name: str) -> str:
    """Path of a tool in .tools/bin, else on PATH; fails the test when neither has it."""
    local = TOOLS_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found in {TOOLS_BIN} or PATH: run scripts/install-chart-tools.sh")
    return found


def run(cmd: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([tool("helm"), *args], check=check)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class Manifests:
    """The documents of one `helm template` run."""

    def __init__(self, docs: list[dict], text: str):
        self.docs = docs
        self.text = text

    def __iter__(self):
        return iter(self.docs)

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def find(self, kind: str, name: str | None = None, component: str | None = None) -> list[dict]:
        out = []
        for d in self.of_kind(kind):
            meta = d["metadata"]
            if name is not None and meta["name"] != name:
                continue
            if component is not None and meta.get("labels", {}).get("app.kubernetes.io/component") != component:
                continue
            out.append(d)
        return out

    def one(self, kind: str, name: str | None = None, component: str | None = None) -> dict:
        found = self.find(kind, name, component)
        assert len(found) == 1, (
            f"expected exactly one {kind} name={name} component={component}, got "
            f"{[d['metadata']['name'] for d in found]}"
        )
        return found[0]

    def none(self, kind: str, name: str | None = None, component: str | None = None) -> None:
        found = self.find(kind, name, component)
        assert not found, f"expected no {kind} name={name} component={component}, got {[d['metadata']['name'] for d in found]}"

    # The objects most tests look at.
    @property
    def server(self) -> dict:
        return self.one("Deployment", component="server")

    @property
    def server_pod(self) -> dict:
        return self.server["spec"]["template"]

    @property
    def server_container(self) -> dict:
        return container(self.server_pod, "rollcall")

    @property
    def server_config(self) -> dict:
        cm = self.one("ConfigMap", name=f"{self.server['metadata']['name']}-config")
        return yaml.safe_load(cm["data"]["config.yaml"])


def container(pod_template: dict, name: str) -> dict:
    spec = pod_template["spec"] if "spec" in pod_template else pod_template
    for c in spec["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name!r} in {[c['name'] for c in spec['containers']]}")


def pod_specs(manifests: Iterable[dict]) -> list[tuple[str, dict]]:
    """(kind/name, pod spec) of every workload and bare Pod."""
    out = []
    for d in manifests:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["spec"]))
    return out


@functools.lru_cache(maxsize=None)
def _template(values_json: str, release: str, namespace: str, extra: tuple[str, ...]) -> tuple[int, str, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(json.loads(values_json), f)
        path = f.name
    try:
        proc = subprocess.run(
            [tool("helm"), "template", release, str(CHART), "--namespace", namespace, "-f", path, *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.unlink(path)
    return proc.returncode, proc.stdout, proc.stderr


def template_raw(values: dict | None = None, release: str = RELEASE, namespace: str = NAMESPACE,
                 extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `helm template` with these values; cached."""
    return _template(json.dumps(values or {}, sort_keys=True), release, namespace, tuple(extra))


def render(values: dict | None = None, release: str = RELEASE, namespace: str = NAMESPACE,
           extra: tuple[str, ...] = ()) -> Manifests:
    """Renders the chart and parses every document; fails the test if helm fails."""
    code, out, err = template_raw(values, release, namespace, extra)
    if code != 0:
        pytest.fail(f"helm template failed ({code}) with values {values}:\n{err}")
    docs = [d for d in yaml.safe_load_all(out) if d is not None]
    return Manifests(docs, out)


def render_error(values: dict) -> str:
    """Renders values that must be refused; returns helm's error text."""
    code, _, err = template_raw(values)
    assert code != 0, f"helm template accepted values it must refuse: {values}"
    return err


# Values exercising every toggle; each must render, validate and pass the assertions.
SCENARIOS: dict[str, dict] = {
    "default": {},
    "external-nats": {"nats": {"enabled": False, "url": "nats://nats.messaging.svc.cluster.local:4222"}},
    "memory-engine": {"nats": {"enabled": False}},
    "nats-cluster": {"nats": {"replicas": 3}},
    "pdb": {"podDisruptionBudget": {"enabled": True}},
    "pdb-min-available": {"podDisruptionBudget": {"enabled": True, "minAvailable": "50%", "maxUnavailable": None}},
    "hpa": {
        "autoscaling": {
            "enabled": True,
            "minReplicas": 2,
            "maxReplicas": 6,
            "targetMemoryUtilizationPercentage": 80,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        }
    },
    "servicemonitor": {
        "metrics": {
            "serviceMonitor": {
                "enabled": True,
                "labels": {"release": "prometheus"},
                "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}],
            }
        }
    },
    "existing-secret": {"existingSecret": "rollcall-keys"},
    "operator-cluster-wide": {"operator": {"watchNamespace": "all", "selector": "team=chat", "replicaCount": 2}},
    "operator-other-namespace": {"operator": {"watchNamespace": "apps"}},
    "operator-disabled": {"operator": {"enabled": False}},
    "kitchen-sink": {
        "fullnameOverride": "presence-prod",
        "commonLabels": {"team": "realtime"},
        "imagePullSecrets": ["registry-creds"],
        "image": {"repository": "registry.example.com/rollcall", "digest": "sha256:" + "a" * 64},
        "replicaCount": 4,
        "config": {
            "client": {"allowed_origins": ["https://app.example.com"], "channel_limit": 64},
            "channel": {"namespaces": [{"name": "chat", "presence": True, "join_leave": True}]},
            "log": {"level": "debug"},
            "shutdown": {"timeout": "20s"},
        },
        "secret": {"apiKey": "k", "tokenHmacSecretKey": "t"},
        "env": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "envFrom": [{"configMapRef": {"name": "extra-env"}}],
        "service": {"type": "NodePort", "nodePort": 30800, "annotations": {"a": "b"}, "labels": {"tier": "edge"}},
        "serviceAccount": {"annotations": {"iam": "role"}},
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
        "podLabels": {"tier": "edge"},
        "priorityClassName": "high",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "presence", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "server"}},
                    }
                ]
            }
        },
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"},
            {
                "maxSkew": 2,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"custom": "yes"}},
            },
        ],
        "preStopSleepSeconds": 10,
        "terminationGracePeriodSeconds": 40,
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": "25%"},
        "metrics": {"serviceMonitor": {"enabled": True, "namespace": "monitoring", "interval": "15s", "scrapeTimeout": "5s"}},
        "operator": {
            "watchNamespace": "all",
            "replicaCount": 2,
            "image": {"repository": "registry.example.com/rollcall-operator", "tag": "0.1.1"},
            "env": [{"name": "RUST_LOG", "value": "debug"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"operator": "Exists"}],
            "priorityClassName": "high",
            "podAnnotations": {"example.com/owner": "realtime"},
        },
        "nats": {"replicas": 3, "nodeSelector": {"kubernetes.io/os": "linux"}, "tolerations": [{"operator": "Exists"}]},
    },
}
