#!/usr/bin/env bash
# End-to-end check on a real cluster (kind or k3d): installs the CRD and the
# operator from manifests/, applies examples/, waits for every ApiKey to be
# Ready, then calls the verifier sidecar (Service crm-api) through
# `kubectl port-forward` with the CRM key's token: 200 for GET /leads
# (leads:read), 403 for GET /orders (it has no orders scope), 401 without a
# token and with a made-up one; the same through nginx auth_request (Service
# crm-api-nginx); and that the --watch-keyset verifier's ServiceAccount may
# read ConfigMaps in its namespace and nothing else.
#
# Not run by CI (no cluster there). Usage, from the repository root:
#   docker build -t keyward:dev . && kind load docker-image keyward:dev
#   KEYWARD_IMAGE=keyward:dev tests/e2e/run.sh
# With no reachable cluster it prints "SKIPPED: no cluster reachable" and exits 0.
# It leaves everything installed; delete with
#   kubectl delete -k examples/ && kubectl delete -k manifests/
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE="${KEYWARD_IMAGE:-keyward:dev}"
NS=keyward-examples
LOCAL_PORT="${E2E_LOCAL_PORT:-18080}"

if ! command -v kubectl >/dev/null 2>&1 || ! kubectl cluster-info --request-timeout=5s >/dev/null 2>&1; then
  echo "SKIPPED: no cluster reachable (kubectl cluster-info failed); nothing was tested"
  exit 0
fi
echo "== cluster: $(kubectl config current-context 2>/dev/null || echo unknown), image $IMAGE"

echo "== install the CRD and the operator (manifests/)"
# The base names the image keyward:dev; swap in KEYWARD_IMAGE without editing files.
kubectl kustomize manifests/ | sed "s#image: keyward:dev#image: ${IMAGE}#" | kubectl apply -f -
kubectl wait --for=condition=Established --timeout=60s crd/apikeys.keyward.dev
kubectl -n keyward-system rollout status deploy/keyward-operator --timeout=180s

echo "== apply the examples (examples/)"
kubectl kustomize examples/ | sed "s#image: keyward:dev#image: ${IMAGE}#" | kubectl apply -f -

echo "== wait for every ApiKey to be Ready"
# `kubectl wait --for=condition=Ready apikey --all`, except keys whose
# spec.expiresAt has passed (examples/apikeys/migration-script.yaml expires at
# the end of 2026): an expired key is Ready=False (Expired) for good.
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LIVE=()
while read -r key expires; do
  if [ -n "$expires" ] && [[ ! "$expires" > "$NOW" ]]; then
    echo "skip $key: expired at $expires"
  else
    LIVE+=("apikey/$key")
  fi
done < <(kubectl -n "$NS" get apikeys -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.expiresAt}{"\n"}{end}')
kubectl -n "$NS" wait --for=condition=Ready "${LIVE[@]}" --timeout=300s
kubectl -n "$NS" get apikeys

# The token stays in this shell variable: never echoed, never written to disk.
TOKEN="$(kubectl -n "$NS" get secret crm-integration-apikey -o jsonpath='{.data.token}' | base64 -d)"
if [ -z "$TOKEN" ]; then
  echo "FAIL: Secret crm-integration-apikey has no token" >&2
  exit 1
fi

# status PORT PATH [CURL_ARGS...]: the HTTP status of GET PATH through a port-forward.
status() {
  local port="$1" path="$2"
  shift 2
  curl -s -o /dev/null -w '%{http_code}' "$@" "http://127.0.0.1:${port}${path}"
}

FAILED=0
expect() {
  local want="$1" got="$2" what="$3"
  if [ "$got" = "$want" ]; then
    echo "ok   $what: $got"
  else
    echo "FAIL $what: got $got, want $want" >&2
    FAILED=1
  fi
}

PF_PIDS=()
trap 'for p in "${PF_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

# check SERVICE SERVICE_PORT LOCAL_PORT: 200 / 403 / 401 / 401 through SERVICE.
check() {
  local svc="$1" svc_port="$2" port="$3"
  echo "== $svc"
  kubectl -n "$NS" rollout status "deploy/$svc" --timeout=300s
  kubectl -n "$NS" port-forward "svc/$svc" "${port}:${svc_port}" >/dev/null 2>&1 &
  PF_PIDS+=("$!")
  for _ in $(seq 1 30); do
    curl -s -o /dev/null "http://127.0.0.1:${port}/" && break
    sleep 1
  done
  # A new key's hash reaches the verifier through kubelet's ConfigMap volume
  # sync (up to about two minutes), so the first allowed request is retried.
  local got=""
  for _ in $(seq 1 36); do
    got="$(status "$port" /leads -H "Authorization: Bearer ${TOKEN}")"
    [ "$got" = 200 ] && break
    sleep 5
  done
  expect 200 "$got" "$svc: GET /leads with the CRM token (leads:read)"
  expect 403 "$(status "$port" /orders -H "Authorization: Bearer ${TOKEN}")" "$svc: GET /orders with the CRM token (no orders scope)"
  expect 401 "$(status "$port" /leads)" "$svc: GET /leads without a token"
  expect 401 "$(status "$port" /leads -H "Authorization: Bearer not-a-keyward-token")" "$svc: GET /leads with a made-up token"
}

check crm-api 8080 "$LOCAL_PORT"                # the verifier as a proxy sidecar
check crm-api-nginx 8000 "$((LOCAL_PORT + 1))"  # nginx auth_request to the verifier's /verify

echo "== RBAC of a --watch-keyset verifier (verifier-watch-rbac.yaml)"
SA="system:serviceaccount:${NS}:keyward-verifier"
expect yes "$(kubectl auth can-i watch configmaps -n "$NS" --as "$SA" 2>/dev/null || true)" "can watch ConfigMaps in $NS"
expect no "$(kubectl auth can-i get secrets -n "$NS" --as "$SA" 2>/dev/null || true)" "cannot read Secrets"
expect no "$(kubectl auth can-i list configmaps -n default --as "$SA" 2>/dev/null || true)" "cannot list ConfigMaps elsewhere"

if [ "$FAILED" != 0 ]; then
  echo "FAILED" >&2
  exit 1
fi
echo "PASSED"
