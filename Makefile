# Rollcall — build, run, test, bench. `make help` lists the targets.
#
# Test tools (nats-server, node and python client packages, helm, kubectl) are installed on
# demand into .tools/ (or via apt for nats-server); see scripts/.

CARGO ?= cargo
TOOLS := $(CURDIR)/.tools
export PATH := $(TOOLS)/bin:$(TOOLS)/node/node_modules/.bin:$(PATH)
export ROLLCALL_BIN ?= $(CURDIR)/target/debug/rollcall

# Each mk/*.mk adds its test target to TEST_TARGETS.
TEST_TARGETS :=
include $(sort $(wildcard mk/*.mk))

.PHONY: help build run test test-rust lint fmt bench e2e clean-tools

help:
	@echo "make run     build and start one node on :8000 (memory engine, example config)"
	@echo "make test    install test tools if missing, then run every test"
	@echo "make bench   run the benchmark suite (release build) and write bench-results/"
	@echo "make e2e     end-to-end on a real Kubernetes cluster (kind/k3d), not run by CI"
	@echo "make lint    cargo fmt --check and clippy -D warnings"

build:
	$(CARGO) build --workspace --all-targets

run:
	$(CARGO) build -p rollcall
	./scripts/run-example.sh

# One build of the workspace; every test suite reuses it.
test: build
	$(MAKE) --no-print-directory lint test-rust $(TEST_TARGETS)
	@echo "make test: all suites passed"

test-rust: tools-nats
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-tools:
	rm -rf $(TOOLS)
