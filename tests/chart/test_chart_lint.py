"""`helm lint`, plain and --strict, with the default values and every scenario."""

import tempfile

import pytest
import yaml

from chartlib import CHART, SCENARIOS, helm


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "rollcall"
    assert chart["type"] == "application"
    assert chart["version"] and chart["appVersion"]
    # The oldest Kubernetes the render tests validate against (native preStop sleep: 1.30).
    assert chart["kubeVersion"] == ">=1.30.0-0"


def test_lint_default():
    out = helm("lint", str(CHART)).stdout
    assert "0 chart(s) failed" in out, out


def test_lint_strict_default():
    out = helm("lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_strict_scenario(scenario):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(SCENARIOS[scenario], f)
        f.flush()
        out = helm("lint", "--strict", str(CHART), "-f", f.name).stdout
    assert "0 chart(s) failed" in out, out
