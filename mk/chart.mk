# Helm chart, container image and Kubernetes end-to-end targets.
#   make test-chart   helm lint, helm template + strict schema validation, chart assertions,
#                     Dockerfile lint (part of `make test`)
#   make e2e-chart    helm install on a real cluster (kind/k3d) reachable through kubectl
# Tools (helm, kubectl, a python venv with pytest and kubernetes-validate, hadolint) land in
# .tools/ via scripts/install-chart-tools.sh.

# mk/*.mk are included before the root Makefile's `help`: keep a fragment's first rule from
# becoming what a bare `make` runs.
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := help
endif

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

# `make e2e` (documented, not in CI) includes the chart's end-to-end run.
e2e: e2e-chart

e2e-chart: tools-chart
	@./tests/chart/e2e.sh "$(CHART_RELEASE)" "$(CHART_NAMESPACE)" "$(CHART_IMAGE)"
