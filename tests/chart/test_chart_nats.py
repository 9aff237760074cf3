"""The NATS toggles: bundled StatefulSet, external URL, or the single-node memory engine."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from chartlib import FULLNAME, NAMESPACE, SCENARIOS, container, render, tool

NATS = f"{FULLNAME}-nats"


def test_bundled_nats_by_default():
    m = render()
    sts = m.one("StatefulSet", name=NATS)
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == f"{NATS}-headless"
    c = container(sts["spec"]["template"], "nats")
    assert c["image"].startswith("nats:"), "the official nats image"
    assert c["args"] == ["--config", "/etc/nats-config/nats.conf"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "monitor"}
    client = m.one("Service", name=NATS)
    assert client["spec"]["ports"][0]["port"] == 4222
    assert client["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    headless = m.one("Service", name=f"{NATS}-headless")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    cfg = m.server_config["engine"]
    assert cfg["type"] == "nats"
    assert cfg["nats"]["url"] == f"nats://{NATS}.{NAMESPACE}.svc:4222"
    assert cfg["nats"]["prefix"] == FULLNAME
    assert m.server["spec"]["replicas"] == 3


def test_external_nats_url():
    m = render(SCENARIOS["external-nats"])
    m.none("StatefulSet")
    m.none("Service", component="nats")
    m.none("ConfigMap", component="nats")
    cfg = m.server_config["engine"]
    assert cfg == {"type": "nats", "nats": {"url": "nats://nats.messaging.svc.cluster.local:4222", "prefix": FULLNAME}}
    assert m.server["spec"]["replicas"] == 3


def test_url_wins_over_enabled():
    m = render({"nats": {"enabled": True, "url": "nats://elsewhere:4222"}})
    m.none("StatefulSet")
    assert m.server_config["engine"]["nats"]["url"] == "nats://elsewhere:4222"


def test_no_nats_means_one_memory_node():
    m = render(SCENARIOS["memory-engine"])
    m.none("StatefulSet")
    m.none("Service", component="nats")
    assert m.server_config["engine"] == {"type": "memory"}
    assert m.server["spec"]["replicas"] == 1
    test_pod = m.one("Pod", component="test")
    assert {"name": "MIN_NODES", "value": "1"} in test_pod["spec"]["containers"][0]["env"]


def test_explicit_replica_count_wins():
    assert render({"replicaCount": 5}).server["spec"]["replicas"] == 5
    assert render({"replicaCount": 1}).server["spec"]["replicas"] == 1
    assert render({"nats": {"enabled": False}, "replicaCount": 1}).server["spec"]["replicas"] == 1


def test_nats_cluster_routes():
    m = render(SCENARIOS["nats-cluster"])
    sts = m.one("StatefulSet", name=NATS)
    assert sts["spec"]["replicas"] == 3
    conf = m.one("ConfigMap", name=f"{NATS}-config")["data"]["nats.conf"]
    for i in range(3):
        assert f'"nats://{NATS}-{i}.{NATS}-headless.{NAMESPACE}.svc:6222"' in conf
    assert "cluster {" in conf
    assert "cluster {" not in render().one("ConfigMap", name=f"{NATS}-config")["data"]["nats.conf"]


def test_nats_config_rolls_the_statefulset():
    one = render().one("StatefulSet", name=NATS)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    three = render(SCENARIOS["nats-cluster"]).one("StatefulSet", name=NATS)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert one != three


@pytest.mark.parametrize("scenario", ["default", "nats-cluster"])
def test_nats_server_accepts_the_rendered_config(scenario):
    """`nats-server -t` parses the rendered nats.conf (nats-server from Debian, see mk/nats.mk)."""
    conf = render(SCENARIOS[scenario]).one("ConfigMap", name=f"{NATS}-config")["data"]["nats.conf"]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "nats.conf"
        path.write_text(conf)
        proc = subprocess.run([tool("nats-server"), "-c", str(path), "-t"], capture_output=True, text=True,
                              env={**os.environ, "SERVER_NAME": f"{NATS}-0"}, timeout=30)
    assert proc.returncode == 0, f"nats-server rejects the rendered config:\n{conf}\n{proc.stdout}{proc.stderr}"


def test_engine_tuning_in_config_is_kept():
    m = render({"config": {"engine": {"type": "nats", "nats": {"prefix": "presence-a", "node_timeout": "5s"}}}})
    assert m.server_config["engine"] == {
        "type": "nats",
        "nats": {"url": f"nats://{NATS}.{NAMESPACE}.svc:4222", "prefix": "presence-a", "node_timeout": "5s"},
    }
