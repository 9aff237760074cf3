# Operator end-to-end targets.
#   make test-operator  the real `rollcall operator` against a Kubernetes API emulator (kmock,
#                       extended in tests/operator/k8s_emulator.py), driven with kubectl
#                       (part of `make test`)
#   make e2e-operator   the same tests against a real cluster (kind/k3d) reachable through
#                       kubectl; part of `make e2e`, not of CI
# Tools (python venv with kmock + pytest, kubectl, helm) land in .tools/ via
# scripts/install-operator-tools.sh.

ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := help
endif

OPERATOR_VENV := $(TOOLS)/venv
OPERATOR_PYTEST := $(OPERATOR_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/operator

TEST_TARGETS += test-operator

.PHONY: tools-operator test-operator e2e-operator

tools-operator:
	@./scripts/install-operator-tools.sh

test-operator: tools-operator
	$(CARGO) build -p rollcall
	PYTHONDONTWRITEBYTECODE=1 $(OPERATOR_PYTEST)

e2e: e2e-operator

e2e-operator: tools-operator
	@kubectl cluster-info >/dev/null 2>&1 || { \
	  echo "make e2e-operator: no Kubernetes cluster answers 'kubectl cluster-info'."; \
	  echo "  Start one (kind create cluster, or k3d cluster create) and point KUBECONFIG at it;"; \
	  echo "  the test installs the CRD, runs target/debug/rollcall operator locally against it"; \
	  echo "  and applies objects in namespace 'apps'."; \
	  exit 1; }
	$(CARGO) build -p rollcall
	PYTHONDONTWRITEBYTECODE=1 ROLLCALL_E2E_CLUSTER=1 $(OPERATOR_PYTEST)
