#!/usr/bin/env bash
# make demo (cluster mode): on the cluster made by make deploy, show
#   1. the SPIFFE identities SPIRE hands out (ClusterSPIFFEIDs -> entries),
#   2. from INSIDE the frontend pod: the backend answers through the sidecars'
#      SPIFFE mTLS, while OpenBao and PostgreSQL are unreachable (Cilium drops),
#   3. the backend sidecar's view (SPIFFE ID, OpenBao token, leases; no secrets),
#   4. frontend and backend on different nodes, with WireGuard on (the hop
#      between them is encrypted) and the Hubble flow between them,
#   5. Hubble flows: forwarded and dropped, with Cilium's verdicts.
# The probes run in ephemeral debug containers (busybox): they share the pod's
# network namespace, so Cilium treats them exactly as the pod.
# Exits 1 if any expectation fails.
set -euo pipefail
# shellcheck source=lib.sh
case ${BASH_SOURCE[0]} in */*) zt_scripts=${BASH_SOURCE[0]%/*} ;; *) zt_scripts=. ;; esac
. "$zt_scripts/lib.sh"
ZT_STEP=demo
require_tools kubectl
kubectl config get-contexts "$CTX" >/dev/null 2>&1 || die "no kubectl context $CTX: run make deploy first"
k() { kubectl --context "$CTX" "$@"; }
PROBE_IMAGE=docker.io/library/busybox:1.37

# probe NAMESPACE APP SCRIPT: run SCRIPT (busybox sh) in an ephemeral container
# of the first pod of APP, as an unprivileged user; print its output.
probe() {
  local ns=$1 app=$2 script=$3 pod name custom out i
  pod=$(k -n "$ns" get pod -l "app.kubernetes.io/name=$app" -o 'jsonpath={.items[0].metadata.name}')
  [ -n "$pod" ] || die "no $app pod in namespace $ns"
  name=zt-probe-$(date +%s)
  custom=$(mktemp)
  printf '{"securityContext":{"runAsUser":65534,"runAsGroup":65534}}\n' >"$custom"
  k -n "$ns" debug "pod/$pod" --image "$PROBE_IMAGE" --container "$name" --profile restricted \
    --custom "$custom" -- sh -c "$script; echo __DONE__" >/dev/null
  rm -f "$custom"
  for i in $(seq 1 60); do
    out=$(k -n "$ns" logs "pod/$pod" -c "$name" 2>/dev/null || true)
    case $out in *__DONE__*) printf '%s\n' "${out%__DONE__*}"; return 0 ;; esac
    sleep 2
  done
  die "probe in $ns/$pod did not finish"
}

say "1. identities: ClusterSPIFFEIDs and the SPIRE entries they produced"
k get clusterspiffeids.spire.spiffe.io
k -n spire exec spire-server-0 -c spire-server -- \
  /opt/spire/bin/spire-server entry show -socketPath /tmp/spire-server/private/api.sock | grep -E 'SPIFFE ID|Selector' || true

say "2. from inside the frontend pod"
result=$(probe 99-apps frontend '
reach() { if nc -z -w 5 "$2" "$3" 2>/dev/null; then echo "$1=REACHABLE"; else echo "$1=BLOCKED"; fi; }
if wget -q -T 10 -O /dev/null http://127.0.0.1:15001/healthz; then echo "backend-via-mtls=OK"; else echo "backend-via-mtls=FAILED"; fi
# Positive control: the same nc, to a port policy allows, must connect;
# otherwise a broken nc would pass the two BLOCKED checks below.
reach backend-8443 backend.99-apps.svc.cluster.local 8443
reach openbao openbao.openbao.svc.cluster.local 8200
reach postgres postgres.postgres.svc.cluster.local 5432')
printf '%s\n' "$result"
failed=0
expect() { case $result in *"$1"*) echo "  ok: $1" ;; *) echo "  UNEXPECTED: wanted $1"; failed=1 ;; esac; }
expect backend-via-mtls=OK
expect backend-8443=REACHABLE
expect openbao=BLOCKED
expect postgres=BLOCKED

say "3. the backend sidecar's status (no secret values in it)"
probe 99-apps backend 'wget -q -T 5 -O - http://127.0.0.1:15000/status'

say "4. frontend -> backend crosses nodes, encrypted by WireGuard"
fe_node=$(k -n 99-apps get pod -l app.kubernetes.io/name=frontend -o 'jsonpath={.items[0].spec.nodeName}')
be_node=$(k -n 99-apps get pod -l app.kubernetes.io/name=backend -o 'jsonpath={.items[0].spec.nodeName}')
echo "  frontend on $fe_node, backend on $be_node"
if [ "$fe_node" = "$be_node" ]; then
  echo "  UNEXPECTED: both on one node, so no packet between them leaves the node (kind config: two workers)"
  failed=1
fi
fe_agent=$(k -n kube-system get pod -l k8s-app=cilium --field-selector "spec.nodeName=$fe_node" -o name | head -n 1)
enc=$(k -n kube-system exec "$fe_agent" -c cilium-agent -- cilium-dbg encrypt status 2>&1 || true)
printf '%s\n' "$enc"
case $enc in *Wireguard*) echo "  ok: WireGuard encryption is on" ;; *) echo "  UNEXPECTED: no WireGuard in cilium encrypt status"; failed=1 ;; esac
echo "  Hubble: frontend -> backend flows seen on the frontend's node"
k -n kube-system exec "$fe_agent" -c cilium-agent -- \
  hubble observe --from-label app.kubernetes.io/name=frontend --to-label app.kubernetes.io/name=backend --last 5 || true

say "5. Hubble: recent flows of namespace 99-apps on each node (dropped ones first)"
for agent in $(k -n kube-system get pod -l k8s-app=cilium -o name); do
  echo "--- $agent"
  k -n kube-system exec "$agent" -c cilium-agent -- hubble observe --namespace 99-apps --verdict DROPPED --last 20 || true
  k -n kube-system exec "$agent" -c cilium-agent -- hubble observe --namespace 99-apps --last 20 || true
done

[ "$failed" -eq 0 ] || die "some expectations failed (see above)"
say "all expectations held"
