#!/usr/bin/env bash
# End-to-end on a real Kubernetes cluster (kind or k3d) reachable through kubectl:
# build and load the image, helm install the chart, apply a PresenceNamespace, wait for the
# operator to mark it Ready, run `helm test`, port-forward the Service and query presence.
# Usage: tests/chart/e2e.sh RELEASE NAMESPACE IMAGE   (make e2e-chart)
# Env: SKIP_IMAGE_BUILD=1 uses IMAGE as it is (already pushed or loaded);
#      KEEP=1 leaves the release installed; E2E_TIMEOUT (seconds, default 300).
set -euo pipefail

RELEASE="${1:-rollcall-e2e}"
NS="${2:-rollcall-e2e}"
IMAGE="${3:-rollcall:e2e}"
TIMEOUT="${E2E_TIMEOUT:-300}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHART="$ROOT/charts/rollcall"
PATH="$ROOT/.tools/bin:$PATH"

die() { echo "e2e-chart: $*" >&2; exit 1; }

command -v kubectl >/dev/null || die "kubectl not found (run scripts/install-chart-tools.sh)"
command -v helm >/dev/null || die "helm not found (run scripts/install-chart-tools.sh)"
if ! info="$(kubectl cluster-info --request-timeout=10s 2>&1)"; then
  die "no reachable Kubernetes cluster, so nothing was tested. Start one (kind create cluster, or
k3d cluster create) and make it kubectl's current context. kubectl said:
$info"
fi
context="$(kubectl config current-context)"
echo "e2e-chart: cluster context $context"

# The image: build it and load it into the cluster's nodes.
if [ "${SKIP_IMAGE_BUILD:-0}" != 1 ]; then
  if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
    die "building $IMAGE needs a running Docker engine (or set SKIP_IMAGE_BUILD=1 with a pullable IMAGE)"
  fi
  docker build -t "$IMAGE" "$ROOT"
  case "$context" in
    kind-*) command -v kind >/dev/null || die "kind not found to load $IMAGE"
            kind load docker-image "$IMAGE" --name "${context#kind-}" ;;
    k3d-*)  command -v k3d >/dev/null || die "k3d not found to import $IMAGE"
            k3d image import "$IMAGE" --cluster "${context#k3d-}" ;;
    *)      die "context $context is neither kind-* nor k3d-*: push $IMAGE to a registry the cluster pulls from and rerun with SKIP_IMAGE_BUILD=1" ;;
  esac
fi
repo="${IMAGE%:*}"
tag="${IMAGE##*:}"
[ "$repo" != "$IMAGE" ] || tag=latest

pf_pid=""
cleanup() {
  [ -z "$pf_pid" ] || kill "$pf_pid" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then
    helm uninstall "$RELEASE" --namespace "$NS" --wait >/dev/null 2>&1 || true
    kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# helm installs crds/ only on first install: apply it so a rerun picks up CRD changes.
kubectl apply --server-side -f "$CHART/crds/"
helm upgrade --install "$RELEASE" "$CHART" --namespace "$NS" --create-namespace \
  --set image.repository="$repo" --set image.tag="$tag" --wait --timeout "${TIMEOUT}s"

server_selector="app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=server"
fullname="$(kubectl --namespace "$NS" get service -l "$server_selector" -o jsonpath='{.items[0].metadata.name}')"
[ -n "$fullname" ] || die "cannot find the server Service of release $RELEASE"
pods_before="$(kubectl --namespace "$NS" get pods -l "$server_selector" \
  -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount}{"\n"}{end}' | sort)"

kubectl --namespace "$NS" apply -f - <<'YAML'
apiVersion: rollcall.dev/v1alpha1
kind: PresenceNamespace
metadata:
  name: chat
spec:
  presence: true
  joinLeave: true
  allowSubscribeForClient: true
  allowPresenceForSubscriber: true
YAML
kubectl --namespace "$NS" wait --for=condition=Ready presencenamespace/chat --timeout="${TIMEOUT}s"
kubectl --namespace "$NS" get presencenamespaces
kubectl --namespace "$NS" get configmap "$fullname-namespaces" -o jsonpath='{.data.namespaces\.yaml}'
echo

helm test "$RELEASE" --namespace "$NS" --logs --timeout "${TIMEOUT}s"

# Port-forward the Service and query presence with the key from the Secret.
port=18000
kubectl --namespace "$NS" port-forward "service/$fullname" "$port:8000" >/tmp/rollcall-e2e-pf.log 2>&1 &
pf_pid=$!
key="$(kubectl --namespace "$NS" get secret "$fullname-secret" -o jsonpath='{.data.ROLLCALL_HTTP_API_KEY}' | base64 -d)"
deadline=$((SECONDS + TIMEOUT))
until curl -fsS --max-time 2 "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || die "port-forward did not come up: $(cat /tmp/rollcall-e2e-pf.log)"
  kill -0 "$pf_pid" 2>/dev/null || die "port-forward exited: $(cat /tmp/rollcall-e2e-pf.log)"
  sleep 1
done
# The kubelet refreshes mounted ConfigMaps within about a minute; until then the namespace is
# unknown (error 102). Poll for the hot reload, bounded.
while :; do
  body="$(curl -fsS --max-time 5 -X POST -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    -d '{"channel":"chat:lobby"}' "http://127.0.0.1:$port/api/presence")"
  case "$body" in *'"presence"'*) break ;; esac
  [ "$SECONDS" -lt "$deadline" ] || die "/api/presence never answered with presence: $body"
  sleep 2
done
echo "POST /api/presence -> $body"
# The namespace arrived by hot reload: the same pods, not restarted.
pods_after="$(kubectl --namespace "$NS" get pods -l "$server_selector" \
  -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount}{"\n"}{end}' | sort)"
[ "$pods_before" = "$pods_after" ] || die "server pods changed while the namespace was applied:
before: $pods_before
after:  $pods_after"
stats="$(curl -fsS --max-time 5 -X POST -H "X-API-Key: $key" -d '{"channel":"chat:lobby"}' \
  "http://127.0.0.1:$port/api/presence_stats")"
echo "POST /api/presence_stats -> $stats"
case "$stats" in *'"num_clients"'*) ;; *) die "presence_stats gave $stats" ;; esac
echo "e2e-chart: passed"
