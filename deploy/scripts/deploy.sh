#!/usr/bin/env bash
# make deploy: a kind cluster with Cilium, then `make install` into it (SPIRE,
# PostgreSQL, OpenBao and both apps: deploy/scripts/install.sh). Safe to re-run:
# every step checks or applies declaratively.
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
# Minimum versions: BuildKit by default and COPY --chmod (docker 23); kind's
# kubeadm v1beta4 config, which Kubernetes 1.36 node images need (kind 0.32);
# kubectl within one minor of the cluster; helm 3.12 for the Cilium chart.
kube_minor=${KUBERNETES_VERSION#1.}
kube_minor=${kube_minor%%.*}
check_version() { # check_version TOOL FOUND MINIMUM [MAXIMUM]
  set -- "$1" "${2#v}" "$3" "${4:-}"
  [ -n "$2" ] || die "could not read the version of $1 (install_hint: $(install_hint "$1"))"
  version_ge "$2" "$3" || die "$1 $2 is too old: make deploy needs $1 >= $3 ($(install_hint "$1"))"
  [ -z "${4:-}" ] || version_ge "$4" "$2" || die "$1 $2 is too new for Kubernetes $KUBERNETES_VERSION: use $1 <= $4.x ($(install_hint "$1"))"
}
check_version docker "$(docker version --format '{{.Server.Version}}' 2>/dev/null)" 23.0.0
check_version kind "$(kind version 2>/dev/null | awk '{print $2}')" 0.32.0
check_version kubectl "$(kubectl version --client 2>/dev/null | awk '/Client Version/ {print $3}')" "1.$((kube_minor - 1)).0" "1.$((kube_minor + 1)).999"
check_version helm "$(helm version --template '{{.Version}}' 2>/dev/null)" 3.12.0
cd "$ZT_ROOT"

# --- 1. cluster ---------------------------------------------------------------
# Not `kind get clusters | grep -q`: under pipefail, grep exiting at the first
# match can make kind die of SIGPIPE and the pipeline report failure.
clusters=$(kind get clusters 2>/dev/null || true)
if grep -qx "$CLUSTER" <<<"$clusters"; then
  say "1/4 kind cluster $CLUSTER exists"
else
  say "1/4 creating kind cluster $CLUSTER (Kubernetes $KUBERNETES_VERSION, two workers, no CNI, no kube-proxy)"
  kind create cluster --config deploy/kind/cluster.yaml --image "$KIND_NODE_IMAGE" --wait 0s
fi

# --- 2. Cilium ----------------------------------------------------------------
say "2/4 installing Cilium $CILIUM_VERSION (kube-proxy replacement, WireGuard, Hubble, mutual auth)"
helm repo add cilium https://helm.cilium.io --force-update >/dev/null
helm upgrade --install cilium cilium/cilium --kube-context "$CTX" --version "$CILIUM_VERSION" \
  --namespace kube-system -f deploy/cilium/values.yaml --wait --timeout 10m
kubectl --context "$CTX" -n kube-system rollout status ds/cilium --timeout 5m
wait_crd ciliumnetworkpolicies.cilium.io kubectl --context "$CTX"

# --- 3. images ----------------------------------------------------------------
# name=Dockerfile: ours, and the example's (Debian's psql, nothing of ours).
images=(zt-sidecar=deploy/docker/zt-sidecar.Dockerfile app-backend=deploy/docker/app-backend.Dockerfile
  app-frontend=deploy/docker/app-frontend.Dockerfile zt-bootstrap=deploy/docker/zt-bootstrap.Dockerfile
  zt-injector=deploy/docker/zt-injector.Dockerfile psql=deploy/examples/psql-report/Dockerfile)
if $skip_build; then
  say "3/4 --skip-build: using the images already built"
else
  for entry in "${images[@]}"; do
    img=${entry%%=*}
    say "3/4 building zt-platform/$img:dev (${entry#*=})"
    DOCKER_BUILDKIT=1 docker build -f "${entry#*=}" \
      --build-arg RUST_VERSION="$RUST_VERSION" --build-arg KUBERNETES_VERSION="$KUBERNETES_VERSION" \
      -t "zt-platform/$img:dev" .
  done
fi
for entry in "${images[@]}"; do
  img=${entry%%=*}
  kind load docker-image "zt-platform/$img:dev" --name "$CLUSTER"
done

# --- 4. the platform: make install, pinned to this cluster's context ----------
say "4/4 make install into $CTX"
restart=1
$skip_build && restart=0
# kind is the demo: its backend seeds the demo users.
ZT_CONTEXT=$CTX ZT_RESTART_APPS=$restart ZT_DEMO_USERS=1 bash "$zt_scripts/install.sh"

cat >&2 <<MSG

  The platform is up in kind cluster $CLUSTER (kubectl context $CTX).

    Frontend:   http://127.0.0.1:8080
    Hubble UI:  kubectl --context $CTX -n kube-system port-forward svc/hubble-ui 12000:80
                then http://127.0.0.1:12000
    Prove it:   make demo CLUSTER=1   (flows, and what the frontend cannot reach)
    Remove it:  make teardown

MSG
