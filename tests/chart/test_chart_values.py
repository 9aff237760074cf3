"""values.schema.json and the chart's own checks refuse bad values; values.yaml documents every key."""

import json
import re

import pytest
import yaml

from chartlib import CHART, render_error

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


@pytest.mark.parametrize("values, where", [
    ({"replicaCount": "three"}, "/replicaCount"),
    ({"replicaCount": -1}, "/replicaCount"),
    ({"replicaCountt": 3}, "replicaCountt"),
    ({"service": {"port": 70000}}, "/service/port"),
    ({"service": {"type": "Ingress"}}, "/service/type"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "sha1:abc"}}, "/image/digest"),
    ({"nats": {"replicas": 0}}, "/nats/replicas"),
    ({"nats": {"url": "http://nats:4222"}}, "/nats/url"),
    ({"nats": {"enabled": "yes"}}, "/nats/enabled"),
    ({"operator": {"watchNamespace": "Bad_NS"}}, "/operator/watchNamespace"),
    ({"operator": {"metricsPort": 0}}, "/operator/metricsPort"),
    ({"podDisruptionBudget": {"maxUnavailable": "lots"}}, "/podDisruptionBudget/maxUnavailable"),
    ({"autoscaling": {"minReplicas": 0}}, "/autoscaling/minReplicas"),
    ({"config": {"engine": {"type": "redis"}}}, "/config/engine/type"),
    ({"config": {"shutdown": {"timeout": "thirty seconds"}}}, "/config/shutdown/timeout"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ({"preStopSleepSeconds": 1000}, "/preStopSleepSeconds"),
    ({"podAnnotations": {"x": 1}}, "/podAnnotations/x"),
])
def test_schema_rejects(values, where):
    err = render_error(values)
    assert "schema" in err, err
    assert where in err, f"error does not name {where}:\n{err}"


@pytest.mark.parametrize("values, message", [
    ({"config": {"http_api": {"key": "plain"}}}, "secret.apiKey or existingSecret"),
    ({"config": {"client": {"token": {"hmac_secret_key": "plain"}}}}, "secret.tokenHmacSecretKey or existingSecret"),
    ({"nats": {"enabled": False}, "replicaCount": 3}, "replicaCount > 1 needs a NATS engine"),
    ({"nats": {"enabled": False}, "autoscaling": {"enabled": True}}, "autoscaling.enabled needs a NATS engine"),
    ({"config": {"engine": {"type": "memory"}}}, 'config.engine.type "memory" contradicts the NATS values'),
    ({"nats": {"enabled": False}, "config": {"engine": {"type": "nats"}}}, 'config.engine.type "nats" contradicts'),
    ({"config": {"engine": {"nats": {"url": "nats://x:4222"}}}}, "config.engine.nats.url: set nats.url instead"),
    ({"terminationGracePeriodSeconds": 35}, "must exceed preStopSleepSeconds + config.shutdown.timeout (35 s)"),
    ({"config": {"shutdown": {"timeout": "1m"}}}, "(65 s)"),
    ({"podDisruptionBudget": {"enabled": True, "minAvailable": 1}}, "either minAvailable or maxUnavailable"),
    ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "minReplicas must not exceed"),
])
def test_chart_refuses(values, message):
    err = render_error(values)
    assert message in err, err


def test_durations_are_parsed():
    from chartlib import render

    # 1m30s + 5 s preStop = 95 s: 96 passes, 95 is refused.
    render({"config": {"shutdown": {"timeout": "1m30s"}}, "terminationGracePeriodSeconds": 96})
    assert "(95 s)" in render_error({"config": {"shutdown": {"timeout": "1m30s"}}, "terminationGracePeriodSeconds": 95})
    # 500ms rounds up to 1 s.
    render({"config": {"shutdown": {"timeout": "500ms"}}, "preStopSleepSeconds": 0, "terminationGracePeriodSeconds": 2})


def _schema_node(path):
    """The schema of a values path, or None when the path is inside a free-form object."""
    node = SCHEMA
    for key in path:
        props = node.get("properties")
        if props is None or key not in props:
            return None
        node = props[key]
    return node


def test_every_chart_key_has_a_comment_above_it():
    """Like the NATS chart: each key the chart defines has its own comment (effect, default,
    constraints); free-form objects (resources, security contexts) are documented as a whole."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack = []  # (indent, key)
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9_]*):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        parent = _schema_node(path[:-1]) if len(path) > 1 else SCHEMA
        if parent is None or "properties" not in parent or key not in parent["properties"]:
            continue  # a value inside a free-form object
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        above = lines[j].strip()
        if not above.startswith("#") or re.fullmatch(r"#+", above):
            missing.append(".".join(path))
    assert not missing, f"values.yaml keys without a comment above them: {missing}"


def test_schema_and_values_agree():
    """Every key in values.yaml is in the schema, and the defaults validate against it."""
    import jsonschema

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(SCHEMA).validate(values)

    def walk(v, node, path):
        if not isinstance(v, dict) or node is None or "properties" not in node:
            return
        for k, sub in v.items():
            assert k in node["properties"] or node.get("additionalProperties") is not False, f"{'.'.join(path + [k])} not in the schema"
            walk(sub, node["properties"].get(k), path + [k])

    walk(values, SCHEMA, [])
