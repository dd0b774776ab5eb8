#!/usr/bin/env bash
# make deploy: a kind cluster with Cilium, SPIRE, PostgreSQL, OpenBao and both
# apps. Safe to re-run: every step checks or applies declaratively.
# Every command below is explained in docs/deploy.md ("What make deploy runs").
#
#   deploy/scripts/deploy.sh [--skip-build]
#     --skip-build   reuse the zt-platform/*:dev images already in Docker
set -euo pipefail
# shellcheck source=lib.sh
case ${BASH_SOURCE[0]} in */*) zt_scripts=${BASH_SOURCE[0]%/*} ;; *) zt_scripts=. ;; esac
. "$zt_scripts/lib.sh"
ZT_STEP=deploy

skip_build=false
for arg in "$@"; do
  case $arg in
    --skip-build) skip_build=true ;;
    *) die "unknown argument: $arg (usage: deploy.sh [--skip-build])" ;;
  esac
done

# --- 0. prerequisites: fail before touching anything -------------------------
require_tools docker kind kubectl helm
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable (is Docker running? can you run 'docker info'?)"
cd "$ZT_ROOT"

# --- 1. cluster ---------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "1/9 kind cluster $CLUSTER exists"
else
  say "1/9 creating kind cluster $CLUSTER (Kubernetes $KUBERNETES_VERSION, no CNI, no kube-proxy)"
  kind create cluster --config deploy/kind/cluster.yaml --image "$KIND_NODE_IMAGE" --wait 0s
fi

# --- 2. Cilium ----------------------------------------------------------------
say "2/9 installing Cilium $CILIUM_VERSION (kube-proxy replacement, WireGuard, Hubble, mutual auth)"
helm repo add cilium https://helm.cilium.io --force-update >/dev/null
helm upgrade --install cilium cilium/cilium --kube-context "$CTX" --version "$CILIUM_VERSION" \
  --namespace kube-system -f deploy/cilium/values.yaml --wait --timeout 10m
kubectl --context "$CTX" -n kube-system rollout status ds/cilium --timeout 5m
kubectl --context "$CTX" wait --for condition=established --timeout 2m crd/ciliumnetworkpolicies.cilium.io

# --- 3. images ----------------------------------------------------------------
images=(zt-sidecar app-backend app-frontend devstack)
if $skip_build; then
  say "3/9 --skip-build: using the images already built"
else
  for img in "${images[@]}"; do
    say "3/9 building zt-platform/$img:dev (deploy/docker/$img.Dockerfile)"
    DOCKER_BUILDKIT=1 docker build -f "deploy/docker/$img.Dockerfile" \
      --build-arg RUST_VERSION="$RUST_VERSION" --build-arg KUBERNETES_VERSION="$KUBERNETES_VERSION" \
      -t "zt-platform/$img:dev" .
  done
fi
for img in "${images[@]}"; do
  kind load docker-image "zt-platform/$img:dev" --name "$CLUSTER"
done

# --- 4. namespaces and network policies (before any workload runs) -----------
say "4/9 namespaces and Cilium network policies (default deny)"
kubectl --context "$CTX" apply -f deploy/k8s/00-namespaces.yaml
kubectl --context "$CTX" apply -f policies/cilium/99-apps.yaml -f policies/cilium/openbao.yaml \
  -f policies/cilium/postgres.yaml -f policies/cilium/spire.yaml

# --- 5. SPIRE -----------------------------------------------------------------
say "5/9 SPIRE $SPIRE_VERSION, spire-controller-manager $SPIRE_CONTROLLER_MANAGER_VERSION, SPIFFE CSI driver $SPIFFE_CSI_DRIVER_VERSION"
crd_base=https://raw.githubusercontent.com/spiffe/spire-controller-manager/v$SPIRE_CONTROLLER_MANAGER_VERSION/config/crd/bases
kubectl --context "$CTX" apply --server-side \
  -f "$crd_base/spire.spiffe.io_clusterspiffeids.yaml" \
  -f "$crd_base/spire.spiffe.io_clusterfederatedtrustdomains.yaml" \
  -f "$crd_base/spire.spiffe.io_clusterstaticentries.yaml"
kubectl --context "$CTX" wait --for condition=established --timeout 2m crd/clusterspiffeids.spire.spiffe.io
kubectl --context "$CTX" apply -f deploy/k8s/spire/
kubectl --context "$CTX" apply -f policies/spire/k8s/clusterspiffeids.yaml
kubectl --context "$CTX" -n spire rollout status statefulset/spire-server --timeout 5m
kubectl --context "$CTX" -n spire rollout status daemonset/spire-agent --timeout 5m
kubectl --context "$CTX" -n spire rollout status daemonset/spiffe-csi-driver --timeout 5m

# --- 6. generated secrets (random, created once, never committed) ------------
# ensure_secret NAMESPACE NAME: a Secret with one random `password`, unless it exists.
ensure_secret() {
  if kubectl --context "$CTX" -n "$1" get secret "$2" >/dev/null 2>&1; then
    say "6/9 secret $1/$2 exists"
  else
    say "6/9 generating secret $1/$2"
    kubectl --context "$CTX" -n "$1" create secret generic "$2" \
      --from-file=password=<(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40)
  fi
}
ensure_secret postgres postgres-superuser
ensure_secret openbao openbao-pg-admin
# The bootstrap Job (namespace openbao) runs roles.sql as the superuser: same value.
if ! kubectl --context "$CTX" -n openbao get secret postgres-superuser >/dev/null 2>&1; then
  say "6/9 copying secret postgres/postgres-superuser to namespace openbao"
  kubectl --context "$CTX" -n openbao create secret generic postgres-superuser \
    --from-file=password=<(kubectl --context "$CTX" -n postgres get secret postgres-superuser -o 'jsonpath={.data.password}' | base64 -d)
fi

# --- 7. PostgreSQL and OpenBao -----------------------------------------------
say "7/9 PostgreSQL $POSTGRES_IMAGE_TAG and OpenBao $OPENBAO_VERSION"
kubectl --context "$CTX" apply -f deploy/k8s/postgres/postgres.yaml
kubectl --context "$CTX" apply -f deploy/k8s/openbao/openbao.yaml
kubectl --context "$CTX" -n postgres rollout status statefulset/postgres --timeout 5m
# OpenBao is not Ready until the bootstrap Job has unsealed it: wait for Running.
kubectl --context "$CTX" -n openbao wait --for=jsonpath='{.status.phase}'=Running pod/openbao-0 --timeout 5m

# --- 8. bootstrap: init, unseal, roles.sql, configure (devstack) -------------
say "8/9 OpenBao bootstrap Job (devstack init/unseal/configure-openbao, roles.sql)"
kubectl --context "$CTX" -n openbao delete job openbao-bootstrap --ignore-not-found --wait=true
kubectl --context "$CTX" apply -f deploy/k8s/openbao/bootstrap.yaml
if ! kubectl --context "$CTX" -n openbao wait --for=condition=complete job/openbao-bootstrap --timeout 10m; then
  kubectl --context "$CTX" -n openbao logs job/openbao-bootstrap --tail 50 >&2 || true
  die "the OpenBao bootstrap Job did not complete (its log is above)"
fi

# --- 9. apps --------------------------------------------------------------------
say "9/9 backend and frontend (zt-sidecar as native sidecars)"
kubectl --context "$CTX" apply -f deploy/k8s/apps/backend.yaml -f deploy/k8s/apps/frontend.yaml
# Pick up images rebuilt under the same tag.
$skip_build || kubectl --context "$CTX" -n 99-apps rollout restart deployment/backend deployment/frontend
kubectl --context "$CTX" -n 99-apps rollout status deployment/backend --timeout 5m
kubectl --context "$CTX" -n 99-apps rollout status deployment/frontend --timeout 5m

cat >&2 <<MSG

  The platform is up in kind cluster $CLUSTER (kubectl context $CTX).

    Frontend:   http://127.0.0.1:8080
    Hubble UI:  kubectl --context $CTX -n kube-system port-forward svc/hubble-ui 12000:80
                then http://127.0.0.1:12000
    Prove it:   make demo CLUSTER=1   (flows, and what the frontend cannot reach)
    Remove it:  make teardown

MSG
