"""The server Deployment, its Service, config, Secret, probes, shutdown and scheduling."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from chartlib import FIXED_SECRET, FULLNAME, NAMESPACE, ROOT, SCENARIOS, container, deep_merge, pod_specs, render

CONFIG_PATH = "/etc/rollcall/config/config.yaml"


def mounts(c: dict) -> dict:
    return {m["name"]: m for m in c.get("volumeMounts", [])}


def volumes(pod: dict) -> dict:
    return {v["name"]: v for v in pod["spec"].get("volumes", [])}


def test_server_runs_rollcall_serve_with_the_mounted_config():
    m = render()
    c = m.server_container
    assert c["command"] == ["rollcall"]
    assert c["args"] == ["serve", "--config", CONFIG_PATH]
    mount = mounts(c)["config"]
    assert CONFIG_PATH.startswith(mount["mountPath"] + "/") and mount["readOnly"] is True
    vol = volumes(m.server_pod)["config"]
    cm = m.one("ConfigMap", name=vol["configMap"]["name"])
    assert "config.yaml" in cm["data"]


def test_probes_hit_health_and_ready_on_the_http_port():
    c = render().server_container
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in c["ports"]


def test_service_exposes_8000_named_http_and_selects_the_server_pods():
    m = render()
    svc = m.one("Service", name=FULLNAME)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    pod_labels = m.server_pod["metadata"]["labels"]
    for k, v in svc["spec"]["selector"].items():
        assert pod_labels.get(k) == v
    assert m.server["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    # The selector picks the server only, never the operator or NATS pods.
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "server"


def test_node_port_service():
    svc = render(SCENARIOS["kitchen-sink"]).one("Service", name="presence-prod")
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"][0]["nodePort"] == 30800
    assert svc["metadata"]["annotations"] == {"a": "b"}


def test_config_defaults_and_merge():
    cfg = render().server_config
    assert cfg["http_server"] == {"address": "0.0.0.0", "port": 8000}
    assert cfg["channel"]["namespaces_file"] == "/etc/rollcall/namespaces/namespaces.yaml"
    assert cfg["shutdown"]["timeout"] == "30s"
    assert cfg["log"] == {"level": "info", "format": "json"}
    # Secrets never land in the ConfigMap.
    assert "http_api" not in cfg and "token" not in cfg.get("client", {})

    merged = render(SCENARIOS["kitchen-sink"]).server_config
    assert merged["client"] == {"allowed_origins": ["https://app.example.com"], "channel_limit": 64}
    assert merged["channel"]["namespaces"] == [{"name": "chat", "presence": True, "join_leave": True}]
    assert merged["channel"]["namespaces_file"] == "/etc/rollcall/namespaces/namespaces.yaml"
    assert merged["log"] == {"level": "debug", "format": "json"}
    assert merged["shutdown"]["timeout"] == "20s"


def test_http_port_follows_the_config():
    m = render({"config": {"http_server": {"port": 9000}}})
    assert m.server_container["ports"][0]["containerPort"] == 9000
    # The Service keeps its port and targets the named container port.
    svc = m.one("Service", name=FULLNAME)
    assert svc["spec"]["ports"][0]["port"] == 8000 and svc["spec"]["ports"][0]["targetPort"] == "http"


def test_namespaces_configmap_is_mounted_as_an_optional_directory():
    m = render()
    c = m.server_container
    mount = mounts(c)["namespaces"]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    assert m.server_config["channel"]["namespaces_file"] == mount["mountPath"] + "/namespaces.yaml"
    vol = volumes(m.server_pod)["namespaces"]["configMap"]
    assert vol == {"name": f"{FULLNAME}-namespaces", "optional": True}
    # The operator owns that ConfigMap: the chart never renders it.
    m.none("ConfigMap", name=f"{FULLNAME}-namespaces")
    # ...and the operator writes exactly the one the server reads.
    args = m.one("Deployment", component="operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--configmap-name") + 1] == vol["name"]


def test_secret_env_and_node_name():
    m = render()
    c = m.server_container
    assert {"secretRef": {"name": f"{FULLNAME}-secret"}} in c["envFrom"]
    secret = m.one("Secret", name=f"{FULLNAME}-secret")
    assert set(secret["data"]) == {"ROLLCALL_HTTP_API_KEY", "ROLLCALL_CLIENT_TOKEN_HMAC_SECRET_KEY"}
    node = next(e for e in c["env"] if e["name"] == "ROLLCALL_NODE_NAME")
    assert node["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_generated_keys_are_random_and_given_keys_are_kept():
    import base64

    a = render({"secret": {"apiKey": "", "tokenHmacSecretKey": ""}}).one("Secret")["data"]
    b = render({"image": {"tag": "other"}}).one("Secret")["data"]
    assert a["ROLLCALL_HTTP_API_KEY"] != b["ROLLCALL_HTTP_API_KEY"]
    assert len(base64.b64decode(a["ROLLCALL_HTTP_API_KEY"])) == 32
    assert len(base64.b64decode(a["ROLLCALL_CLIENT_TOKEN_HMAC_SECRET_KEY"])) == 48
    given = render(FIXED_SECRET).one("Secret")["data"]
    assert base64.b64decode(given["ROLLCALL_HTTP_API_KEY"]) == b"test-api-key"
    assert base64.b64decode(given["ROLLCALL_CLIENT_TOKEN_HMAC_SECRET_KEY"]) == b"test-token-key"


def test_secret_template_reuses_the_keys_in_the_cluster():
    """`helm template` cannot reach a cluster, so check the template text keeps the lookup."""
    text = (ROOT / "charts/rollcall/templates/secret.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in text
    assert 'get $existing "ROLLCALL_HTTP_API_KEY"' in text
    assert 'get $existing "ROLLCALL_CLIENT_TOKEN_HMAC_SECRET_KEY"' in text


def test_existing_secret():
    m = render(SCENARIOS["existing-secret"])
    m.none("Secret")
    assert {"secretRef": {"name": "rollcall-keys"}} in m.server_container["envFrom"]
    test_pod = m.one("Pod", component="test")
    key_ref = next(e for e in test_pod["spec"]["containers"][0]["env"] if e["name"] == "API_KEY")
    assert key_ref["valueFrom"]["secretKeyRef"] == {"name": "rollcall-keys", "key": "ROLLCALL_HTTP_API_KEY"}


def test_checksum_follows_config_and_secret_but_not_namespaces():
    base = render(FIXED_SECRET).server_pod["metadata"]["annotations"]
    assert set(k for k in base if k.startswith("checksum/")) == {"checksum/config", "checksum/secret"}
    again = render(deep_merge(FIXED_SECRET, {"image": {"pullPolicy": "Always"}})).server_pod["metadata"]["annotations"]
    assert again["checksum/config"] == base["checksum/config"] and again["checksum/secret"] == base["checksum/secret"]

    config_changed = render(deep_merge(FIXED_SECRET, {"config": {"log": {"level": "debug"}}}))
    assert config_changed.server_pod["metadata"]["annotations"]["checksum/config"] != base["checksum/config"]
    static_ns = render(deep_merge(FIXED_SECRET, {"config": {"channel": {"namespaces": [{"name": "chat", "presence": True}]}}}))
    assert static_ns.server_pod["metadata"]["annotations"]["checksum/config"] != base["checksum/config"]

    secret_changed = render(deep_merge(FIXED_SECRET, {"secret": {"apiKey": "rotated"}}))
    assert secret_changed.server_pod["metadata"]["annotations"]["checksum/secret"] != base["checksum/secret"]
    assert secret_changed.server_pod["metadata"]["annotations"]["checksum/config"] == base["checksum/config"]

    # Namespaces come from the operator's ConfigMap, hot-reloaded: whatever changes how the
    # operator renders them leaves the server pods alone.
    for operator in ({"selector": "team=chat"}, {"watchNamespace": "all"}, {"replicaCount": 2}, {"enabled": False}):
        other = render(deep_merge(FIXED_SECRET, {"operator": operator})).server_pod["metadata"]["annotations"]
        assert other["checksum/config"] == base["checksum/config"], operator
        assert other["checksum/secret"] == base["checksum/secret"], operator


def test_graceful_shutdown_budget():
    m = render()
    pod = m.server_pod["spec"]
    c = m.server_container
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep == 5
    assert pod["terminationGracePeriodSeconds"] > sleep + 30  # shutdown.timeout 30s
    off = render({"preStopSleepSeconds": 0})
    assert "lifecycle" not in off.server_container


def test_replicas_strategy_and_hpa():
    m = render()
    assert m.server["spec"]["replicas"] == 3
    assert m.server["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    m.none("HorizontalPodAutoscaler")
    m.none("PodDisruptionBudget")

    hpa_m = render(SCENARIOS["hpa"])
    assert "replicas" not in hpa_m.server["spec"], "the HPA owns the replica count"
    hpa = hpa_m.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    targets = {mt["resource"]["name"]: mt["resource"]["target"]["averageUtilization"] for mt in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}


def test_pod_disruption_budget():
    m = render(SCENARIOS["pdb"])
    pdb = m.one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == m.server["spec"]["selector"]["matchLabels"]
    pct = render(SCENARIOS["pdb-min-available"]).one("PodDisruptionBudget")
    assert pct["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in pct["spec"]


def test_service_monitor_scrapes_the_http_port():
    m = render(SCENARIOS["servicemonitor"])
    sm = m.one("ServiceMonitor")
    assert sm["metadata"]["namespace"] == NAMESPACE
    svc = m.one("Service", name=FULLNAME)
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    ep = sm["spec"]["endpoints"][0]
    assert ep["port"] == "http" and ep["path"] == "/metrics"
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}
    # No other Service of the chart matches its selector (NATS, etc.).
    for other in m.of_kind("Service"):
        if other is not svc:
            assert not sm["spec"]["selector"]["matchLabels"].items() <= other["metadata"]["labels"].items()
    elsewhere = render(SCENARIOS["kitchen-sink"]).one("ServiceMonitor")
    assert elsewhere["metadata"]["namespace"] == "monitoring"
    assert elsewhere["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_scheduling_values_reach_the_pod():
    m = render(SCENARIOS["kitchen-sink"])
    pod = m.server_pod["spec"]
    v = SCENARIOS["kitchen-sink"]
    assert pod["nodeSelector"] == v["nodeSelector"]
    assert pod["tolerations"] == v["tolerations"]
    assert pod["affinity"] == v["affinity"]
    assert pod["priorityClassName"] == "high"
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert m.server_container["image"] == "registry.example.com/rollcall@sha256:" + "a" * 64
    spread = pod["topologySpreadConstraints"]
    # An entry without labelSelector gets the server's selector labels; a given one is kept.
    assert spread[0]["labelSelector"] == {"matchLabels": m.server["spec"]["selector"]["matchLabels"]}
    assert spread[1]["labelSelector"] == {"matchLabels": {"custom": "yes"}}
    default = render().server_pod["spec"]["topologySpreadConstraints"]
    assert default[0]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert m.server_pod["metadata"]["labels"]["tier"] == "edge"
    assert m.server_pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert m.server["metadata"]["labels"]["team"] == "realtime"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_pod_is_locked_down(scenario):
    for where, spec in pod_specs(render(SCENARIOS[scenario])):
        psc = spec.get("securityContext", {})
        assert psc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{where}/{c['name']}"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}/{c['name']}"
            assert c.get("resources", {}).get("limits", {}).get("memory"), f"{where}/{c['name']} has no memory limit"


def test_server_pod_has_no_api_token():
    m = render()
    assert m.server_pod["spec"]["automountServiceAccountToken"] is False
    sa = m.one("ServiceAccount", name=FULLNAME)
    assert sa["automountServiceAccountToken"] is False
    assert m.server_pod["spec"]["serviceAccountName"] == FULLNAME


def test_helm_test_hook_checks_health_and_authenticated_info():
    m = render()
    pod = m.one("Pod", component="test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["URL"]["value"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8000"
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": f"{FULLNAME}-secret", "key": "ROLLCALL_HTTP_API_KEY"}
    assert env["MIN_NODES"]["value"] == "3"
    script = c["command"][-1]
    assert '"$URL/health"' in script
    assert '-X POST -H "X-API-Key: $API_KEY"' in script and '"$URL/api/info"' in script
    assert "401" in script
    assert pod["spec"]["restartPolicy"] == "Never"


def _rollcall_bin() -> str:
    path = os.environ.get("ROLLCALL_BIN") or str(ROOT / "target" / "debug" / "rollcall")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"rollcall binary not found at {path}: build it with `cargo build -p rollcall` (make test-chart does)")
    return path


@pytest.mark.parametrize("scenario", ["default", "memory-engine", "external-nats", "kitchen-sink"])
def test_rendered_config_passes_rollcall_checkconfig_strict(scenario):
    """The real server accepts what the chart renders, unknown keys being errors."""
    cfg_text = render(SCENARIOS[scenario]).one("ConfigMap", component="server")["data"]["config.yaml"]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_text(cfg_text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLCALL_")}
        env.update(ROLLCALL_HTTP_API_KEY="k", ROLLCALL_CLIENT_TOKEN_HMAC_SECRET_KEY="t", ROLLCALL_NODE_NAME="pod-0")
        proc = subprocess.run([_rollcall_bin(), "checkconfig", "--strict", "--config", str(path)],
                              capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, f"rollcall checkconfig rejected the rendered config:\n{cfg_text}\n{proc.stderr}"
    assert not proc.stderr.strip() or "warning" not in proc.stderr.lower(), proc.stderr


def _notes(*sets: str) -> str:
    from chartlib import CHART, helm

    args = ["install", "rc", str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    assert "NOTES:" in out, out
    return out[out.index("NOTES:"):]


def test_notes_tell_how_to_reach_query_and_mint_a_token():
    notes = _notes()
    assert f"kubectl --namespace {NAMESPACE} port-forward service/{FULLNAME} 8000:8000" in notes
    assert f"get secret {FULLNAME}-secret" in notes and "ROLLCALL_HTTP_API_KEY" in notes
    assert '-H "X-API-Key: $ROLLCALL_API_KEY"' in notes and "http://localhost:8000/api/presence" in notes
    assert f"exec deployment/{FULLNAME} --" in notes
    assert "rollcall gentoken --config /etc/rollcall/config/config.yaml --user 42" in notes
    assert "kubectl apply --server-side -f charts/rollcall/crds/" in notes
    assert "engine nats (bundled NATS" in notes

    custom = _notes("existingSecret=keys", "nats.enabled=false", "operator.enabled=false")
    assert "get secret keys" in custom
    assert "engine memory" in custom and "1 replica(s)" in custom
    assert "the operator is disabled" in custom
