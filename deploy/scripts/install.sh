#!/usr/bin/env bash
# make install: the whole platform — zt-injector (its Helm chart), SPIRE (with
# the spire-controller-manager CRDs), PostgreSQL, OpenBao and its bootstrap
# Job, the apps and the example workload (their sidecars injected), and the
# Cilium network policies — into the cluster your kube context points at. `make
# deploy` runs it after creating its kind cluster; on your own cluster, run it
# directly. Safe to re-run. Every command is explained in docs/deploy.md
# ("make install on your own cluster").
#
# Environment:
#   ZT_CONTEXT=NAME    kubectl context to use (default: the current context)
#   WAIT=0             apply everything, but do not wait for rollouts or the
#                      bootstrap Job (a cluster that cannot run pods, tests)
#   ZT_SPIRE_CRDS="F…" files or URLs of the spire-controller-manager CRDs
#                      (default: its v$SPIRE_CONTROLLER_MANAGER_VERSION release on GitHub)
#   ZT_RESTART_APPS=1  restart the apps if they were already running
#                      (make deploy sets it after rebuilding the :dev images)
#   ZT_INJECTOR_VALUES="F…"  more values files for the zt-injector chart
#                      (helm -f, in order; deploy/charts/zt-injector/values.yaml
#                      documents every value)
#   ZT_DEMO_USERS=1    seed the demo's users with known passwords (jake/jake99,
#                      …): make deploy sets it; off by default — never on a
#                      cluster that is not a demo
#   ZT_LAB=1           the lab profile (devstack's one-node cluster, make lab):
#                      only what cannot exist there differs — no Cilium, no
#                      spire-controller-manager (entries made with the SPIRE
#                      CLI), no SPIFFE CSI driver (a hostPath instead), GitHub's
#                      API is the stand-in. deploy/lab/ holds the overlays;
#                      docs/deploy.md lists each difference and why.
set -euo pipefail
# shellcheck source=lib.sh
case ${BASH_SOURCE[0]} in */*) zt_scripts=${BASH_SOURCE[0]%/*} ;; *) zt_scripts=. ;; esac
. "$zt_scripts/lib.sh"
ZT_STEP=install

WAIT=${WAIT:-1}
case $WAIT in 0 | 1) ;; *) die "WAIT must be 0 or 1, got '$WAIT'" ;; esac
ZT_DEMO_USERS=${ZT_DEMO_USERS:-0}
case $ZT_DEMO_USERS in 0 | 1) ;; *) die "ZT_DEMO_USERS must be 0 or 1, got '$ZT_DEMO_USERS'" ;; esac
ZT_LAB=${ZT_LAB:-0}
case $ZT_LAB in 0 | 1) ;; *) die "ZT_LAB must be 0 or 1, got '$ZT_LAB'" ;; esac
[ "$ZT_LAB$WAIT" != 10 ] || die "ZT_LAB=1 needs WAIT=1: the lab's SPIRE entries are created in the running SPIRE server"
crd_base=https://raw.githubusercontent.com/spiffe/spire-controller-manager/v$SPIRE_CONTROLLER_MANAGER_VERSION/config/crd/bases
ZT_SPIRE_CRDS=${ZT_SPIRE_CRDS:-$crd_base/spire.spiffe.io_clusterspiffeids.yaml $crd_base/spire.spiffe.io_clusterfederatedtrustdomains.yaml $crd_base/spire.spiffe.io_clusterstaticentries.yaml}

require_tools kubectl helm
cd "$ZT_ROOT"
k() { kubectl ${ZT_CONTEXT:+--context "$ZT_CONTEXT"} "$@"; }
waiting() { [ "$WAIT" = 1 ]; }
lab() { [ "$ZT_LAB" = 1 ]; }
# apply_overlay DIR: the manifests users get, with the lab's patches (deploy/lab/DIR).
apply_overlay() {
  k kustomize --load-restrictor LoadRestrictionsNone "deploy/lab/$1" | k apply -f -
}

# --- 0. which cluster, and can it take the platform -------------------------
context=${ZT_CONTEXT:-$(k config current-context 2>/dev/null)} ||
  die "no kube context: point kubectl at a cluster (kubectl config use-context NAME) or set ZT_CONTEXT"
[ -n "$context" ] || die "no kube context: point kubectl at a cluster (kubectl config use-context NAME) or set ZT_CONTEXT"
version=$(k version -o json 2>&1) || die "cannot reach the API server of context $context: $version"
server_minor=$(printf '%s' "$version" | sed -n '/"serverVersion"/,/}/s/.*"minor": *"\([0-9]*\).*/\1/p')
client_minor=$(printf '%s' "$version" | sed -n '/"clientVersion"/,/}/s/.*"minor": *"\([0-9]*\).*/\1/p')
[ -n "$server_minor" ] || die "the API server of context $context did not say its version: $version"
skew=$((client_minor - server_minor))
[ "${skew#-}" -le 1 ] || die "kubectl 1.$client_minor ($(command -v kubectl)) is more than one minor away from the server (1.$server_minor): put a kubectl within one minor of it first on your PATH"
# Native sidecars (init containers with restartPolicy Always): on by default since 1.29.
[ "$server_minor" -ge 29 ] || die "Kubernetes 1.$server_minor is too old: zt-sidecar runs as a native sidecar, which needs 1.29 or newer"
# The lab profile relaxes Pod Security and skips the network policies: only
# for devstack's lab cluster, never a real one.
! lab || [ "$context" = devstack ] ||
  die "ZT_LAB=1 is for the lab cluster (context devstack, make lab) only; context $context would get privileged namespaces and no network policy"
say "0/8 installing into context $context (Kubernetes 1.$server_minor)$(waiting || printf ', WAIT=0: not waiting for pods')$(lab && printf ', lab profile')"
lab || k get crd ciliumnetworkpolicies.cilium.io >/dev/null 2>&1 ||
  die "this cluster has no Cilium (CRD ciliumnetworkpolicies.cilium.io is missing): the platform's network policies are Cilium policies. Install Cilium $CILIUM_VERSION first (docs/deploy.md#make-install-on-your-own-cluster; make deploy does it on kind), then run make install again."
# The policies require Cilium's mutual authentication for the flows to OpenBao
# and PostgreSQL: without it Cilium drops them.
if ! lab; then
  mutual=$(k -n kube-system get configmap cilium-config -o 'jsonpath={.data.mesh-auth-mutual-enabled}' 2>/dev/null || true)
  [ "$mutual" = true ] ||
    die "Cilium's mutual authentication is not enabled (kube-system/cilium-config has mesh-auth-mutual-enabled='$mutual'): the platform's policies require it for the flows to OpenBao and PostgreSQL, which Cilium would drop. Enable it (Helm values authentication.mutual.spire.enabled=true, as deploy/cilium/values.yaml does), then run make install again."
fi
# PostgreSQL, OpenBao and the SPIRE server each claim a volume of the default
# StorageClass (the lab installs its own, as kind has one).
if ! lab; then
  # Either annotation marks the default (the beta one is still honoured).
  if ! default_classes=$(k get storageclass -o 'jsonpath={range .items[*]}{.metadata.annotations.storageclass\.kubernetes\.io/is-default-class} {.metadata.annotations.storageclass\.beta\.kubernetes\.io/is-default-class}{"\n"}{end}' 2>&1); then
    say "note: cannot list the StorageClasses to check for a default one ($default_classes); going on: the volume claims of PostgreSQL, OpenBao and the SPIRE server stay Pending without one"
  elif ! grep -qw true <<<"$default_classes"; then
    no_class="this cluster has no default StorageClass: the volume claims of PostgreSQL, OpenBao and the SPIRE server (1 Gi each) would stay Pending"
    waiting || say "note: $no_class (WAIT=0: installing anyway)"
    ! waiting || die "$no_class. Mark one as default (kubectl patch storageclass NAME -p '{\"metadata\":{\"annotations\":{\"storageclass.kubernetes.io/is-default-class\":\"true\"}}}'), then run make install again."
  fi
fi
# rollout NAMESPACE KIND/NAME: kubectl rollout status for up to 5 minutes; on a
# timeout, why the namespace's pods and volume claims are not ready.
rollout() {
  k -n "$1" rollout status "$2" --timeout 5m && return 0
  say "$2 in namespace $1 is not ready after 5 minutes. Its namespace's pods (phase, containers waiting, conditions not met) and volume claims:"
  k -n "$1" get pods -o 'jsonpath={range .items[*]}  {.metadata.name}: {.status.phase}{range .status.initContainerStatuses[*]}{" "}{.name}={.state.waiting.reason}{end}{range .status.containerStatuses[*]}{" "}{.name}={.state.waiting.reason}{end}{range .status.conditions[?(@.status=="False")]}; {.type}: {.reason} {.message}{end}{"\n"}{end}' >&2 || true
  k -n "$1" get pvc -o 'jsonpath={range .items[*]}  volume claim {.metadata.name}: {.status.phase}{"\n"}{end}' >&2 || true
  die "$2 (namespace $1) did not become ready within 5 minutes. ImagePullBackOff or ErrImageNeverPull: the zt-platform images are not on the node (docs/deploy.md, Images); Pending with an unbound volume claim: no default StorageClass; kubectl -n $1 describe pods says more (README.md, Troubleshooting)."
}

# --- 1. namespaces and network policies (before any workload runs) -----------
if lab; then
  say "1/8 namespaces (lab: 99-apps allows the Workload API hostPath; no Cilium, so no network policy is enforced)"
  apply_overlay namespaces
else
  say "1/8 namespaces and Cilium network policies (default deny)"
  k apply -f deploy/k8s/00-namespaces.yaml
  k apply -f policies/cilium/99-apps.yaml -f policies/cilium/openbao.yaml \
    -f policies/cilium/postgres.yaml -f policies/cilium/spire.yaml \
    -f policies/cilium/zt-injector.yaml -f policies/cilium/zt-examples.yaml
fi

# --- 2. zt-injector (before any annotated pod is created) ---------------------
# Its webhook fails closed for the opted-in namespaces (99-apps, zt-examples):
# until it answers with a trusted certificate, their annotated pods (all of
# the apps') are refused and their controllers retry. So wait for it before
# the apps when waiting.
injector_values=()
lab && injector_values+=(-f deploy/lab/zt-injector-values.yaml)
read -r -a extra_values <<<"${ZT_INJECTOR_VALUES:-}"
# ${a[@]+"${a[@]}"}: an empty array under `set -u` is an error in bash < 4.4
# (macOS ships 3.2).
for f in ${extra_values[@]+"${extra_values[@]}"}; do
  [ -r "$f" ] || die "ZT_INJECTOR_VALUES: cannot read $f"
  injector_values+=(-f "$f")
done
say "2/8 zt-injector (helm chart deploy/charts/zt-injector)"
injector_existed=$(k -n zt-injector get deployment zt-injector --ignore-not-found -o name)
# --reset-values: every run installs exactly the chart's values and the files
# given now; a one-off value of an earlier run does not linger.
helm upgrade --install --reset-values zt-injector deploy/charts/zt-injector --namespace zt-injector \
  ${ZT_CONTEXT:+--kube-context "$ZT_CONTEXT"} ${injector_values[@]+"${injector_values[@]}"}
# Like the apps: a running injector restarts only to pick up a rebuilt :dev image.
if [ "${ZT_RESTART_APPS:-0}" = 1 ] && [ -n "$injector_existed" ]; then
  k -n zt-injector rollout restart deployment/zt-injector
fi
if waiting; then
  rollout zt-injector deployment/zt-injector
  # Ready replicas serve the CA in the Secret; the caBundle follows within a poll.
  deadline=$((SECONDS + 120))
  until [ -n "$(k get mutatingwebhookconfiguration zt-injector -o 'jsonpath={.webhooks[0].clientConfig.caBundle}')" ]; do
    [ $SECONDS -lt $deadline ] ||
      die "zt-injector is running but has not set its webhook's caBundle within 2 minutes: kubectl -n zt-injector logs deploy/zt-injector"
    sleep 1
  done
  # The caBundle proves the injector reaches the API server; this proves the
  # reverse: the API server calls the webhook for a pod in an opted-in
  # namespace (a server-side dry run: nothing is created).
  probe_pod='{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"zt-install-check-","annotations":{"zt.demo.local/inject":"true"}},"spec":{"securityContext":{"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}},"containers":[{"name":"check","image":"zt-platform/zt-sidecar:dev","securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}'
  deadline=$((SECONDS + 60))
  until reply=$(printf '%s' "$probe_pod" | k -n 99-apps create --dry-run=server -o 'jsonpath={.spec.initContainers[0].name}' -f - 2>&1) &&
    [ "$reply" = zt-sidecar ]; do
    [ $SECONDS -lt $deadline ] ||
      die "the API server cannot call zt-injector's webhook ($reply). On managed clusters the control plane may not reach pod IPs, or Cilium may not see it as the kube-apiserver entity: see docs/deploy.md#the-api-server-must-reach-zt-injector"
    sleep 2
  done
  say "2/8 the API server calls zt-injector: a dry-run pod in 99-apps gets its sidecar"
fi

# --- 3. SPIRE -----------------------------------------------------------------
# spire_cli ARGS...: the SPIRE server's own CLI, in its pod.
spire_cli() {
  k -n spire exec spire-server-0 -c spire-server -- /opt/spire/bin/spire-server "$@" \
    -socketPath /tmp/spire-server/private/api.sock
}
# The lab's entries (no spire-controller-manager): the node, then one entry per
# workload from policies/spire/lab/entries.txt, each created once.
register_lab_entries() {
  local node=spiffe://demo.local/lab/node id selectors s args
  spire_cli entry show -spiffeID "$node" | grep -q 'Entry ID' ||
    spire_cli entry create -node -spiffeID "$node" -selector k8s_psat:cluster:zt-demo >/dev/null
  while read -r id selectors; do
    case $id in '' | '#'*) continue ;; esac
    if spire_cli entry show -spiffeID "$id" | grep -q 'Entry ID'; then
      say "3/8 lab: entry $id exists"
      continue
    fi
    args=()
    for s in $selectors; do args+=(-selector "$s"); done
    spire_cli entry create -parentID "$node" -spiffeID "$id" "${args[@]}" >/dev/null
    say "3/8 lab: entry $id created ($selectors)"
  done <policies/spire/lab/entries.txt
}
if lab; then
  say "3/8 SPIRE $SPIRE_VERSION (lab: no spire-controller-manager, no SPIFFE CSI driver)"
  apply_overlay spire
  rollout spire statefulset/spire-server
  rollout spire daemonset/spire-agent
  register_lab_entries
else
  say "3/8 SPIRE $SPIRE_VERSION, spire-controller-manager $SPIRE_CONTROLLER_MANAGER_VERSION, SPIFFE CSI driver $SPIFFE_CSI_DRIVER_VERSION"
  crd_args=()
  for crd in $ZT_SPIRE_CRDS; do crd_args+=(-f "$crd"); done
  k apply --server-side "${crd_args[@]}"
  wait_crd clusterspiffeids.spire.spiffe.io k
  k apply -f deploy/k8s/spire/
  k apply -f policies/spire/k8s/clusterspiffeids.yaml
  if waiting; then
    rollout spire statefulset/spire-server
    rollout spire daemonset/spire-agent
    rollout spire daemonset/spiffe-csi-driver
  fi
fi

# --- 4. generated secrets (random, created once, never committed) ------------
# ensure_secret NAMESPACE NAME: a Secret with one random `password`, unless it exists.
ensure_secret() {
  if [ -n "$(k -n "$1" get secret "$2" --ignore-not-found -o name)" ]; then
    say "4/8 secret $1/$2 exists"
  else
    say "4/8 generating secret $1/$2"
    k -n "$1" create secret generic "$2" \
      --from-file=password=<(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40)
  fi
}
ensure_secret postgres postgres-superuser
ensure_secret openbao openbao-pg-admin
# The bootstrap Job (namespace openbao) runs roles.sql as the superuser: same value.
if [ -z "$(k -n openbao get secret postgres-superuser --ignore-not-found -o name)" ]; then
  say "4/8 copying secret postgres/postgres-superuser to namespace openbao"
  k -n openbao create secret generic postgres-superuser \
    --from-file=password=<(k -n postgres get secret postgres-superuser -o 'jsonpath={.data.password}' | base64 -d)
fi

# --- 5. PostgreSQL and OpenBao -----------------------------------------------
say "5/8 PostgreSQL $POSTGRES_IMAGE_TAG and OpenBao $OPENBAO_VERSION"
k apply -f deploy/k8s/postgres/postgres.yaml
k apply -f deploy/k8s/openbao/openbao.yaml
if waiting; then
  rollout postgres statefulset/postgres
  # OpenBao is not Ready until the bootstrap Job has unsealed it: wait for Running.
  wait_for pod/openbao-0 '{.status.phase}' Running 300 k -n openbao
fi

# --- 6. bootstrap: init, unseal, roles.sql, configure (zt-bootstrap) ---------
job=openbao-bootstrap
# "finished" (Complete or Failed), "unfinished", or "" when there is none.
job_state() {
  local conds
  conds=$(k -n openbao get job "$job" --ignore-not-found \
    -o 'jsonpath={.metadata.name}:{range .status.conditions[?(@.status=="True")]}{.type} {end}')
  case $conds in
    "") echo "" ;;
    *:*Complete* | *:*Failed*) echo finished ;;
    *) echo unfinished ;;
  esac
}
# show_bootstrap_logs [POD [--previous]]: the log of POD (of its previous
# container), or of every pod of the Job.
show_bootstrap_logs() {
  local pod pods
  pods=${1:+pod/$1}
  [ -n "$pods" ] || pods=$(k -n openbao get pods -l job-name=$job -o name 2>/dev/null || true)
  for pod in $pods; do
    printf -- '--- %s%s\n' "$pod" "${2:+ (the attempt before the last restart)}" >&2
    k -n openbao logs "$pod" ${2:+"$2"} --tail 60 >&2 || true
  done
}
# wait_bootstrap fresh|kept: until the Job completes, or stop with its log.
wait_bootstrap() {
  local rc=0
  wait_job "$job" 900 "$1" k -n openbao || rc=$?
  case $rc in
    0) return 0 ;;
    1)
      show_bootstrap_logs
      die "the OpenBao bootstrap Job failed (its log is above)"
      ;;
    2)
      show_bootstrap_logs "$ZT_JOB_POD" ${ZT_JOB_PREVIOUS:+"$ZT_JOB_PREVIOUS"}
      die "an attempt of the OpenBao bootstrap Job failed (its log is above; pod $ZT_JOB_POD). The Job retries by itself (backoffLimit 2); fix the cause, then run make install again: it waits for a Job that has not finished instead of replacing it, and stops only if an attempt fails again."
      ;;
    3) die "the OpenBao bootstrap pod cannot start ($ZT_JOB_REASON): kubectl -n openbao describe pod $ZT_JOB_POD" ;;
    *)
      show_bootstrap_logs
      die "the OpenBao bootstrap Job did not finish within 15 minutes (its log is above)"
      ;;
  esac
}
bootstrap_mode=fresh
case $(job_state) in
  finished)
    say "6/8 replacing the finished OpenBao bootstrap Job"
    # Foreground: its pods go with it, so none of them is taken for the new Job's.
    k -n openbao delete job "$job" --wait=true --cascade=foreground --timeout=2m ||
      die "the finished OpenBao bootstrap Job was not deleted within 2 minutes (its pods must go first: kubectl -n openbao get pods -l job-name=$job)"
    ;;
  unfinished)
    # Never delete a running Job: its pod may hold a fresh unseal key in memory.
    say "6/8 the OpenBao bootstrap Job from an earlier run has not finished: leaving it to finish"
    bootstrap_mode=kept
    ;;
  *) say "6/8 OpenBao bootstrap Job (zt-bootstrap init/unseal/configure-openbao, roles.sql)" ;;
esac
k apply -f deploy/k8s/openbao/bootstrap.yaml ||
  die "could not apply the bootstrap Job; if one from an earlier run is still running, let it finish (kubectl -n openbao get job $job) and run make install again"
! waiting || wait_bootstrap "$bootstrap_mode"

# --- 7. apps and the example ------------------------------------------------
say "7/8 backend, frontend and the example job (zt-sidecar injected from their annotations)"
existed=$(k -n 99-apps get deployment backend frontend --ignore-not-found -o name)
if lab; then
  apply_overlay apps
elif [ "$ZT_DEMO_USERS" = 1 ]; then
  say "7/8 demo profile: the backend seeds the demo users (known passwords)"
  k kustomize --load-restrictor LoadRestrictionsNone deploy/demo | k apply -f -
else
  k apply -f deploy/k8s/apps/backend.yaml -f deploy/k8s/apps/frontend.yaml \
    -f deploy/examples/psql-report/psql-report.yaml
fi
# Only running apps need a restart to pick up images rebuilt under the same tag.
if [ "${ZT_RESTART_APPS:-0}" = 1 ] && [ -n "$existed" ]; then
  # shellcheck disable=SC2086 # one word per deployment
  k -n 99-apps rollout restart $existed
fi
if waiting; then
  rollout 99-apps deployment/backend
  rollout 99-apps deployment/frontend
fi
lab && waiting && rollout github-standin deployment/github-standin
say "8/8 installed into context $context$(waiting || printf ' (WAIT=0: pods not waited for)')"
say "the frontend: NodePort 30080 on any node (http://<node address>:30080), or kubectl --context $context -n 99-apps port-forward svc/frontend 3000:3000 and http://127.0.0.1:3000$(lab || [ "$ZT_DEMO_USERS" = 1 ] || printf '; no users yet: register one on its /register page')"
