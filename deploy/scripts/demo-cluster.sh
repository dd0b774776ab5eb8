#!/usr/bin/env bash
# make demo CLUSTER=1: the seed's demo (steps 1-17) on the cluster made by make
# deploy, through the cluster itself, then (kind only) the network part:
#   1. login as jake through the frontend's sidecar -> SPIFFE mTLS -> backend's sidecar
#   2. the backend sidecar's SPIFFE identity, and OpenBao's audit entry for its JWT-SVID login
#   3. a GitHub token stored in OpenBao through the sidecar's proxy, and repos fetched with it
#   4. the backend's PostgreSQL user rotated (forced) and the old one dropped
#   4b. zt-injector: the sidecars were attached by annotation; the example job
#      (deploy/examples/psql-report, Debian's psql) gets its own short-lived
#      PostgreSQL user, which is gone when the job ends
#   5. (Cilium) identities, what the frontend pod can and cannot reach, WireGuard
#      across nodes, Hubble flows
# The API calls go through `kubectl port-forward` to loopback listeners inside
# the pods (the frontend sidecar's outbound port, the backend sidecar's admin
# port): the same hops the apps use, nothing exposed. Exits 1 if any
# expectation fails.
#
# Environment:
#   ZT_CONTEXT=NAME   kubectl context (default kind-zt-demo)
#   ZT_LAB=1          the lab cluster (make lab): no Cilium, so part 5 is skipped,
#                     and the GitHub stand-in's token is used
#   GITHUB_TOKEN=...  a real token for part 3 on kind (api.github.com); without
#                     it, part 3 is skipped there
#   FRONTEND_URL=...  where the frontend answers (default http://127.0.0.1:8080)
set -euo pipefail
# shellcheck source=lib.sh
case ${BASH_SOURCE[0]} in */*) zt_scripts=${BASH_SOURCE[0]%/*} ;; *) zt_scripts=. ;; esac
. "$zt_scripts/lib.sh"
ZT_STEP=demo
require_tools kubectl curl
ZT_LAB=${ZT_LAB:-0}
case $ZT_LAB in 0 | 1) ;; *) die "ZT_LAB must be 0 or 1, got '$ZT_LAB'" ;; esac
CTX=${ZT_CONTEXT:-$CTX}
kubectl config get-contexts "$CTX" >/dev/null 2>&1 || die "no kubectl context $CTX: run make deploy first (or make lab, then ZT_LAB=1)"
k() { kubectl --context "$CTX" "$@"; }
lab() { [ "$ZT_LAB" = 1 ]; }
FRONTEND_URL=${FRONTEND_URL:-http://127.0.0.1:8080}
STANDIN_TOKEN=ghp_standin_demo_token_0123456789abcdef
PROBE_IMAGE=docker.io/library/busybox:1.37
failed=0
ok() { echo "  ok: $*"; }
bad() { echo "  UNEXPECTED: $*"; failed=1; }
# json_str KEY: the first "KEY":"value" string in stdin.
json_str() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" | head -n 1; }

pod_of() {
  local pod
  pod=$(k -n "$1" get pod -l "app.kubernetes.io/name=$2" --field-selector=status.phase=Running \
    -o 'jsonpath={.items[0].metadata.name}')
  [ -n "$pod" ] || die "no running $2 pod in namespace $1"
  printf '%s\n' "$pod"
}

# forward NS APP PORT: kubectl port-forward to PORT inside the app's pod (a
# loopback listener there); prints the local port. Stopped when the script exits.
pf_pids=()
trap 'for p in ${pf_pids[@]+"${pf_pids[@]}"}; do kill "$p" 2>/dev/null || true; done' EXIT
forward() {
  local log pid i port
  log=$(mktemp)
  k -n "$1" port-forward "pod/$(pod_of "$1" "$2")" ":$3" >"$log" 2>&1 &
  pid=$!
  pf_pids+=("$pid")
  for i in $(seq 1 100); do
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && { rm -f "$log"; printf '%s\n' "$port"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  die "kubectl port-forward to $1/$2:$3 did not start"
}
api=$(forward 99-apps frontend 15001)
admin=$(forward 99-apps backend 15000)
API=http://127.0.0.1:$api
ADMIN=http://127.0.0.1:$admin
# admin PATH [curl args]: the backend sidecar's admin endpoint, as a local client calls it.
admin() { local path=$1; shift; curl -sS -m 10 -H 'Host: 127.0.0.1:15000' -H 'X-ZT-Admin: 1' "$@" "$ADMIN$path"; }
psql_in_pod() { k -n postgres exec postgres-0 -c postgres -- psql -X -q -At -U postgres -d appdb -c "$1"; }
db_users() { psql_in_pod "SELECT usename FROM pg_user WHERE usename LIKE 'v-backend-role%' ORDER BY usename"; }

say "Part 1 (seed steps 1-3): login as jake, through both sidecars"
login=$(curl -sS -m 15 -H 'Content-Type: application/json' -d '{"username":"jake","password":"jake99"}' "$API/api/auth/login")
token=$(printf '%s' "$login" | json_str access_token)
if [ -n "$token" ]; then ok "POST /api/auth/login -> a JWT ($(printf '%s' "$token" | cut -d. -f1 | tr -d '\n' | head -c 20)...)"; else bad "login failed: $login"; fi
me=$(curl -sS -m 10 -H "Authorization: Bearer $token" "$API/api/auth/me")
case $me in *'"username":"jake"'*) ok "GET /api/auth/me -> jake <$(printf '%s' "$me" | json_str email)>" ;; *) bad "GET /api/auth/me: $me" ;; esac
# The refusals: a wrong password, no token, a token with a forged signature.
code=$(curl -sS -m 15 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d '{"username":"jake","password":"wrong-password"}' "$API/api/auth/login")
[ "$code" = 401 ] && ok "a wrong password is refused (401)" || bad "wrong password answered $code"
code=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$API/api/auth/me")
[ "$code" = 401 ] && ok "GET /api/auth/me without a token is refused (401)" || bad "no token answered $code"
code=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${token%.*}.AAAA" "$API/api/auth/me")
[ "$code" = 401 ] && ok "a token with a forged signature is refused (401)" || bad "forged token answered $code"
code=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$FRONTEND_URL/login" || true)
[ "$code" = 200 ] && ok "the frontend's login page at $FRONTEND_URL/login answers 200" || bad "frontend $FRONTEND_URL/login answered $code"

say "Part 2 (seed steps 4-7): the backend's workload identity"
status=$(admin /status)
id=$(printf '%s' "$status" | json_str spiffe_id)
[ "$id" = spiffe://demo.local/ns/99-apps/sa/backend ] && ok "backend sidecar SVID: $id (SPIRE k8s attestation)" || bad "backend sidecar /status: $status"
# The backend's last login (other workloads, e.g. the example job, log in too).
audit=$(k -n openbao exec openbao-0 -c openbao -- sh -c 'grep "auth/jwt/login" /openbao/audit/audit.log | grep "\"type\":\"response\"" | grep "spiffe://demo.local/ns/99-apps/sa/backend" | tail -n 1' || true)
case $audit in
  *'"role":"backend"'* | *'"role_name":"backend"'* | *"spiffe://demo.local/ns/99-apps/sa/backend"*)
    ok "OpenBao's audit log: a JWT-SVID login to role backend for $(printf '%s' "$audit" | grep -o 'spiffe://demo.local/ns/99-apps/sa/backend' | head -n 1)" ;;
  *) bad "no JWT-SVID login of the backend in OpenBao's audit log" ;;
esac

say "Part 3 (seed steps 8-12): a GitHub token in OpenBao, through the sidecar's proxy"
gh_token=${GITHUB_TOKEN:-}
lab && gh_token=${gh_token:-$STANDIN_TOKEN}
if [ -z "$gh_token" ]; then
  echo "  skipped: set GITHUB_TOKEN=<a GitHub token> to run it against api.github.com"
else
  conf=$(printf '{"token":"%s"}' "$gh_token" | curl -sS -m 20 -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d @- "$API/api/github/configure")
  case $conf in *'"github_user"'*) ok "POST /api/github/configure -> GitHub user $(printf '%s' "$conf" | json_str login)" ;; *) bad "configure: $conf" ;; esac
  repos=$(curl -sS -m 20 -H "Authorization: Bearer $token" "$API/api/github/repos")
  case $repos in *'"name"'*) ok "GET /api/github/repos (token read back from OpenBao): $(printf '%s' "$repos" | grep -o '"name":"[^"]*"' | head -n 3 | tr '\n' ' ')" ;; *) bad "repos: $repos" ;; esac
fi

say "Part 4 (seed steps 13-17): the backend's PostgreSQL user, rotated"
before=$(db_users)
echo "  PostgreSQL users now: $(echo $before)"
rotated=$(admin /rotate/db -X POST)
echo "  POST /rotate/db -> $rotated"
new=""
for i in $(seq 1 60); do
  new=$(comm -13 <(printf '%s\n' "$before" | sort) <(db_users | sort) | head -n 1)
  [ -n "$new" ] && break
  sleep 1
done
[ -n "$new" ] && ok "new user $new created by OpenBao" || bad "no new database user after a forced rotation"
me=$(curl -sS -m 10 -H "Authorization: Bearer $token" "$API/api/auth/me")
case $me in *'"username":"jake"'*) ok "the backend still answers from PostgreSQL with the new user" ;; *) bad "after rotation: $me" ;; esac
gone=""
for i in $(seq 1 90); do
  if [ -z "$(comm -12 <(printf '%s\n' "$before" | sort) <(db_users | sort))" ]; then gone=1; break; fi
  sleep 1
done
[ -n "$gone" ] && ok "old user(s) $(echo $before) dropped after the grace period (lease revoked)" || bad "old users still there: $(db_users | tr '\n' ' ')"

say "Part 4b: zt-sidecar attached by annotation (zt-injector), also to a workload that is not ours"
for app in backend frontend; do
  pod=$(pod_of 99-apps "$app")
  got=$(k -n 99-apps get pod "$pod" -o 'jsonpath={.spec.initContainers[0].name} {.metadata.annotations.zt\.demo\.local/status}')
  [ "$got" = "zt-sidecar injected" ] && ok "$app: zt-sidecar injected from its annotations (pod $pod)" || bad "$app pod $pod: '$got'"
done
job=psql-report-demo-$(date +%s)
k -n zt-examples create job --from=cronjob/psql-report "$job" >/dev/null
echo "  kubectl -n zt-examples create job --from=cronjob/psql-report $job"
if k -n zt-examples wait --for=condition=complete "job/$job" --timeout=180s >/dev/null 2>&1; then
  report=$(k -n zt-examples logs "job/$job" -c psql)
  # The job's log is not ours: printed without control characters, and the
  # user name taken only if it has the shape OpenBao gives it (it goes into SQL).
  printf '%s\n' "$report" | tr -d '\000-\010\013-\037\177' | sed 's/^/    /'
  user=$(printf '%s\n' "$report" | sed -n 's/^connecting as \(v-report-reader-[a-z0-9-]*\) .*/\1/p' | head -n 1)
  case $user in v-report-reader*) ok "the job's psql connected as its own short-lived user $user" ;; *) bad "the job did not report a v-report-reader user" ;; esac
  left=1
  for i in $(seq 1 60); do
    left=$(printf '\\set u %s\nSELECT count(*) FROM pg_user WHERE usename = :'"'"'u'"'"';\n' "$user" |
      k -n postgres exec -i postgres-0 -c postgres -- psql -X -q -At -U postgres -d appdb)
    [ "$left" = 0 ] && break
    sleep 1
  done
  [ "$left" = 0 ] && ok "user $user dropped: the sidecar revoked its lease when the job ended" || bad "user $user still exists after the job ended"
else
  bad "job $job did not complete within 3 minutes: kubectl -n zt-examples describe job $job; kubectl -n zt-examples logs job/$job --all-containers"
fi

if lab; then
  say "Part 5 (seed steps 18-21): skipped in the lab — no Cilium here (docs/deploy.md); run it on kind"
else
  # probe NAMESPACE APP SCRIPT: run SCRIPT (busybox sh) in an ephemeral container
  # of the first pod of APP, as an unprivileged user; print its output.
  probe() {
    local ns=$1 app=$2 script=$3 pod name custom out i
    pod=$(pod_of "$ns" "$app")
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

  say "Part 5a: identities: ClusterSPIFFEIDs and the SPIRE entries they produced"
  k get clusterspiffeids.spire.spiffe.io
  k -n spire exec spire-server-0 -c spire-server -- \
    /opt/spire/bin/spire-server entry show -socketPath /tmp/spire-server/private/api.sock | grep -E 'SPIFFE ID|Selector' || true

  say "Part 5b: from inside the frontend pod"
  result=$(probe 99-apps frontend '
reach() { if nc -z -w 5 "$2" "$3" 2>/dev/null; then echo "$1=REACHABLE"; else echo "$1=BLOCKED"; fi; }
if wget -q -T 10 -O /dev/null http://127.0.0.1:15001/healthz; then echo "backend-via-mtls=OK"; else echo "backend-via-mtls=FAILED"; fi
# Positive control: the same nc, to a port policy allows, must connect;
# otherwise a broken nc would pass the two BLOCKED checks below.
reach backend-8443 backend.99-apps.svc.cluster.local 8443
reach openbao openbao.openbao.svc.cluster.local 8200
reach postgres postgres.postgres.svc.cluster.local 5432')
  printf '%s\n' "$result"
  expect() { case $result in *"$1"*) ok "$1" ;; *) bad "wanted $1" ;; esac; }
  expect backend-via-mtls=OK
  expect backend-8443=REACHABLE
  expect openbao=BLOCKED
  expect postgres=BLOCKED

  say "Part 5c: frontend -> backend crosses nodes, encrypted by WireGuard"
  fe_node=$(k -n 99-apps get pod -l app.kubernetes.io/name=frontend -o 'jsonpath={.items[0].spec.nodeName}')
  be_node=$(k -n 99-apps get pod -l app.kubernetes.io/name=backend -o 'jsonpath={.items[0].spec.nodeName}')
  echo "  frontend on $fe_node, backend on $be_node"
  [ "$fe_node" != "$be_node" ] || bad "both on one node, so no packet between them leaves the node (kind config: two workers)"
  fe_agent=$(k -n kube-system get pod -l k8s-app=cilium --field-selector "spec.nodeName=$fe_node" -o name | head -n 1)
  enc=$(k -n kube-system exec "$fe_agent" -c cilium-agent -- cilium-dbg encrypt status 2>&1 || true)
  printf '%s\n' "$enc"
  case $enc in *Wireguard*) ok "WireGuard encryption is on" ;; *) bad "no WireGuard in cilium encrypt status" ;; esac
  echo "  Hubble: frontend -> backend flows seen on the frontend's node"
  k -n kube-system exec "$fe_agent" -c cilium-agent -- \
    hubble observe --from-label app.kubernetes.io/name=frontend --to-label app.kubernetes.io/name=backend --last 5 || true

  say "Part 5d: Hubble: recent flows of namespace 99-apps on each node (dropped ones first)"
  for agent in $(k -n kube-system get pod -l k8s-app=cilium -o name); do
    echo "--- $agent"
    k -n kube-system exec "$agent" -c cilium-agent -- hubble observe --namespace 99-apps --verdict DROPPED --last 20 || true
    k -n kube-system exec "$agent" -c cilium-agent -- hubble observe --namespace 99-apps --last 20 || true
  done
fi

[ "$failed" -eq 0 ] || die "some expectations failed (see above)"
say "all expectations held"
