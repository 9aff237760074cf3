# nats-server for the cluster tests: Debian package, or already on PATH.
.PHONY: tools-nats
tools-nats:
	@./scripts/install-nats.sh
