# Compatibility suites: real third-party Centrifugo clients judge the real binary.
#   make test-compat   node: centrifuge (client SDK) + cent.js (server API), node --test
#                      python: centrifuge-python (client SDK) + cent (server API), pytest
#                      Each suite starts its own `rollcall serve` per engine (memory, and nats
#                      with its own nats-server) and runs every scenario against both. Part of
#                      `make test`. Pinned clients land in .tools/ via
#                      scripts/install-compat-tools.sh; tests live in tests/compat/.

COMPAT_VENV := $(TOOLS)/venv
# Upper bound for one suite run (the suites take well under a minute each).
COMPAT_TIMEOUT ?= 300

TEST_TARGETS += test-compat

.PHONY: tools-compat test-compat test-compat-node test-compat-python

tools-compat:
	@./scripts/install-compat-tools.sh

# Both suites always run; the target fails if either did.
test-compat: tools-compat tools-nats
	$(CARGO) build -p rollcall
	@status=0; \
	$(MAKE) --no-print-directory test-compat-node || status=1; \
	$(MAKE) --no-print-directory test-compat-python || status=1; \
	if [ $$status -ne 0 ]; then echo "test-compat: a compatibility suite failed (see above)" >&2; fi; \
	exit $$status

# The two halves alone (after `make tools-compat` and a build).
test-compat-node:
	cd tests/compat/node && timeout $(COMPAT_TIMEOUT) node --test client.test.mjs api.test.mjs

test-compat-python:
	cd tests/compat/python && timeout $(COMPAT_TIMEOUT) $(COMPAT_VENV)/bin/python -m pytest
