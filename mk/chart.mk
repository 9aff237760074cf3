# Helm chart, container image and Kubernetes end-to-end targets.
#   make test-chart   helm lint, helm template + strict schema validation, chart assertions,
#                     Dockerfile lint (part of `make test`)
#   make e2e-chart    helm install on a real cluster (kind/k3d) reachable through kubectl
# Tools (helm, kubectl, a python venv with pytest and kubernetes-validate, hadolint) land in
# .tools/ via scripts/install-chart-tools.sh.

CHART_VENV := $(TOOLS)/venv
CHART_RELEASE ?= rollcall-e2e
CHART_NAMESPACE ?= rollcall-e2e
CHART_IMAGE ?= rollcall:e2e

TEST_TARGETS += test-chart

.PHONY: tools-chart test-chart e2e-chart

tools-chart:
	@./scripts/install-chart-tools.sh

# The rendered server config is checked with the real `rollcall checkconfig --strict`, and the
# bundled NATS config with `nats-server -t`: build the binary (a no-op after `make build`).
test-chart: tools-chart tools-nats
	$(CARGO) build -p rollcall
	$(CHART_VENV)/bin/python -m pytest -q tests/chart

e2e-chart: tools-chart
	@./tests/chart/e2e.sh "$(CHART_RELEASE)" "$(CHART_NAMESPACE)" "$(CHART_IMAGE)"
