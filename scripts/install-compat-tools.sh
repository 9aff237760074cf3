#!/usr/bin/env bash
# Installs the compatibility-suite clients into <repo>/.tools when missing or out of date:
#   .tools/node/node_modules   centrifuge, ws, cent.js  (npm ci from tests/compat/node's lock file)
#   .tools/venv                cent, centrifuge-python, pytest, pytest-asyncio
#                              (tests/compat/python/requirements.txt)
# Idempotent and quick when everything is there: each half keeps a stamp of the file it was
# installed from and reinstalls only when that file changed. The venv is shared with other
# suites: it is created when missing and only ever added to, never recreated.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
NODE_DIR="$TOOLS/node"
VENV="$TOOLS/venv"
PYTHON="${PYTHON:-python3}"
NODE_SRC="$ROOT/tests/compat/node"
PY_REQS="$ROOT/tests/compat/python/requirements.txt"

mkdir -p "$TOOLS"
# One installer at a time: other install scripts fill .tools (and the venv) too.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$TOOLS/.install.lock"
  flock 9
fi

# Debian packages for what the machine lacks (node, npm, python venv support).
apt_install() {
  echo "installing Debian packages: $*..." >&2
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq "$@" >/dev/null
}
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
for tool in node npm "$PYTHON"; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "install-compat-tools: '$tool' is still missing: install it (Debian: apt-get install nodejs npm python3-venv)" >&2
    exit 1
  }
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "install-compat-tools: node $(node --version) is too old: the suite needs >= 18 (node --test)" >&2
  exit 1
fi

# Content stamp of the files an install came from.
stamp_of() { cat "$@" | cksum | cut -d' ' -f1; }

# --- node: npm ci into .tools/node from the committed package.json + package-lock.json ---
node_stamp="$(stamp_of "$NODE_SRC/package.json" "$NODE_SRC/package-lock.json")"
if [ "$(cat "$NODE_DIR/.compat-stamp" 2>/dev/null)" != "$node_stamp" ] \
  || [ ! -d "$NODE_DIR/node_modules/centrifuge" ] \
  || [ ! -d "$NODE_DIR/node_modules/cent.js" ] \
  || [ ! -d "$NODE_DIR/node_modules/ws" ]; then
  echo "installing node compat clients (centrifuge, ws, cent.js) into $NODE_DIR..." >&2
  mkdir -p "$NODE_DIR"
  cp "$NODE_SRC/package.json" "$NODE_SRC/package-lock.json" "$NODE_DIR/"
  # --ignore-scripts: none of these packages needs an install script to work.
  npm ci --prefix "$NODE_DIR" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
  echo "$node_stamp" >"$NODE_DIR/.compat-stamp"
fi
# ES modules resolve packages from the importing file's folders only (no NODE_PATH): link the
# suite's node_modules (gitignored) to the installed tree.
link="$NODE_SRC/node_modules"
if [ "$(readlink "$link" 2>/dev/null)" != "$NODE_DIR/node_modules" ]; then
  rm -rf "$link"
  ln -s "$NODE_DIR/node_modules" "$link"
fi

# --- python: the shared venv, created only when missing ---
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating python venv at $VENV..." >&2
  "$PYTHON" -m venv "$VENV"
fi
py_stamp="$(stamp_of "$PY_REQS")"
if [ "$(cat "$VENV/.compat-stamp" 2>/dev/null)" != "$py_stamp" ] \
  || ! "$VENV/bin/python" -c 'import cent, centrifuge, pytest, pytest_asyncio' >/dev/null 2>&1; then
  echo "installing python compat clients (cent, centrifuge-python, pytest-asyncio) into $VENV..." >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PY_REQS"
  echo "$py_stamp" >"$VENV/.compat-stamp"
fi
