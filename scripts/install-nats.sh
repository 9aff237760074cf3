#!/usr/bin/env bash
# Installs nats-server (Debian package) when it is not on PATH. Needs root or sudo.
set -euo pipefail
if command -v nats-server >/dev/null 2>&1; then exit 0; fi
echo "installing nats-server (Debian package)..." >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq nats-server >/dev/null
command -v nats-server >/dev/null || { echo "nats-server still missing: install it with 'apt-get install nats-server'" >&2; exit 1; }
