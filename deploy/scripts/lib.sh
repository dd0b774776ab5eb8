# Shared by deploy.sh, teardown.sh, demo-cluster.sh and schemas.sh. Sourced, not run.
# Uses only bash builtins until require_tools has passed, so a machine without
# the tools gets the clear message below and nothing else happens.

# Repository root, from this file's location (no external command needed).
here=${BASH_SOURCE[0]%/*}
[ "$here" = "${BASH_SOURCE[0]}" ] && here=.
ZT_ROOT=$(cd "$here/../.." && pwd)
# shellcheck source=../versions.env
. "$ZT_ROOT/deploy/versions.env"

# The kind cluster and the kubectl/helm context every command is pinned to,
# so `make deploy` never touches another cluster in your kubeconfig.
CLUSTER=zt-demo
CTX=kind-$CLUSTER

# Bold step lines on a terminal; plain text when piped, logged or NO_COLOR is set.
if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then
  say() { printf '\033[1m[%s]\033[0m %s\n' "${ZT_STEP:-deploy}" "$*" >&2; }
else
  say() { printf '[%s] %s\n' "${ZT_STEP:-deploy}" "$*" >&2; }
fi
die() { printf '[%s] ERROR: %s\n' "${ZT_STEP:-deploy}" "$*" >&2; exit 1; }

install_hint() {
  case $1 in
    docker) echo "docker: https://docs.docker.com/engine/install/ (the daemon must be running)" ;;
    kind) echo "kind $KIND_VERSION: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
    kubectl) echo "kubectl (1.${KUBERNETES_VERSION#1.}, or within one minor): https://kubernetes.io/docs/tasks/tools/" ;;
    helm) echo "helm 3: https://helm.sh/docs/intro/install/" ;;
    curl) echo "curl: your distribution's package (apt-get install curl, brew install curl)" ;;
    *) echo "$1" ;;
  esac
}

# version_ge A B: true when dotted version A >= B (leading "v" and any
# suffix after the numbers ignored).
version_ge() {
  local a=${1#v} b=${2#v} i x y
  a=${a%%[!0-9.]*} b=${b%%[!0-9.]*}
  for i in 1 2 3; do
    x=$(printf '%s' "$a" | cut -d. -f$i) y=$(printf '%s' "$b" | cut -d. -f$i)
    x=${x:-0} y=${y:-0}
    [ "$x" -gt "$y" ] && return 0
    [ "$x" -lt "$y" ] && return 1
  done
  return 0
}

# require_tools TOOL...: exit 69 (EX_UNAVAILABLE) naming every missing tool
# before anything has been run or changed.
require_tools() {
  local missing=() t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  {
    printf '[%s] ERROR: missing required tool(s): %s\n' "${ZT_STEP:-deploy}" "${missing[*]}"
    printf '  Install:\n'
    for t in "${missing[@]}"; do printf '    - %s\n' "$(install_hint "$t")"; done
    printf '  Nothing was changed. See docs/deploy.md#prerequisites.\n'
  } >&2
  exit 69
}

# wait_for OBJECT JSONPATH WANT SECONDS KUBECTL...: polls
# `KUBECTL get OBJECT -o jsonpath=JSONPATH` every second until it prints WANT,
# for at most SECONDS. Not `kubectl wait`: that fails at once while OBJECT
# does not exist yet, and while a CRD just applied has no status yet
# (".status.conditions accessor error"). Any error is retried until the
# deadline (the API server may be busy installing); the message names the
# last one, or OBJECT's conditions.
wait_for() {
  local object=$1 path=$2 want=$3 limit=$4 got='' err='' deadline
  shift 4
  deadline=$((SECONDS + limit))
  while :; do
    if got=$("$@" --request-timeout=10s get "$object" -o "jsonpath=$path" 2>&1); then
      [ "$got" = "$want" ] && return 0
      err=''
    else
      err=$got got=''
    fi
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 1
  done
  [ -z "$err" ] || die "$object: no $path = $want after ${limit}s: $err"
  die "$object: $path is ${got:-unset}, not $want, after ${limit}s; its conditions: $("$@" --request-timeout=10s get "$object" \
    -o 'jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}: {.message}); {end}' 2>&1)"
}

# wait_crd CRD KUBECTL...: until CRD is Established (2 min), so resources of
# its kind can be created.
wait_crd() {
  local crd=$1
  shift
  wait_for "crd/$crd" '{.status.conditions[?(@.type=="Established")].status}' True 120 "$@"
}

# wait_job JOB SECONDS fresh|kept KUBECTL...: waits for JOB (KUBECTL carries
# its -n) to finish, for at most SECONDS. Returns
#   0  Complete;
#   1  Failed;
#   2  an attempt failed during the wait (a container of a pod of JOB ended
#      with a non-zero exit code); ZT_JOB_POD names the pod, ZT_JOB_PREVIOUS
#      is `--previous` when the failed attempt is no longer the pod's current
#      container (for `kubectl logs`);
#   3  a pod cannot start (image pull or config error); ZT_JOB_POD and
#      ZT_JOB_REASON say which and why;
#   4  SECONDS passed.
# Only pods of this Job count (its uid's label): those of a Job of the same
# name deleted just before may linger a moment. With `kept` (the Job was left
# from an earlier run), a failure its pods had already when the wait began
# does not count, only a later one, so a Job whose earlier attempt failed can
# be waited for after the cause is fixed; and a pod that cannot pull its
# image gets the kubelet's pull back-off (5 min; ZT_JOB_PULL_GRACE, 330 s) to
# pick up an image loaded since. A failure is told apart by its time (the container's last
# termination), not by the restart count, which also rises when the fixed
# attempt starts.
wait_job() {
  local job=$1 limit=$2 mode=$3 start=$SECONDS first=1 got uid conds pods pod now last reason mark from base='' seen
  shift 3
  ZT_JOB_POD='' ZT_JOB_REASON='' ZT_JOB_PREVIOUS=''
  while :; do
    got=$("$@" --request-timeout=10s get job "$job" -o 'jsonpath={.metadata.uid} {range .status.conditions[?(@.status=="True")]}{.type} {end}' 2>/dev/null) || got=''
    uid=${got%% *} conds=${got#"$uid"}
    case $conds in
      *Complete*) return 0 ;;
      *Failed*) return 1 ;;
    esac
    # One line per pod: name, the current and the last termination of its
    # container (exit code/time, "/" when none), why it is waiting. A failed
    # query is tried again at the next poll (and takes no baseline).
    if [ -n "$uid" ] && pods=$("$@" --request-timeout=10s get pods -l "batch.kubernetes.io/controller-uid=$uid" -o 'jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].state.terminated.exitCode}/{.status.containerStatuses[0].state.terminated.finishedAt} {.status.containerStatuses[0].lastState.terminated.exitCode}/{.status.containerStatuses[0].lastState.terminated.finishedAt} {.status.containerStatuses[0].state.waiting.reason}{"\n"}{end}' 2>/dev/null); then
      while read -r pod now last reason; do
        [ -n "$pod" ] || continue
        # The time of the pod's latest failed attempt, "-" when none.
        if [ -n "${now%%/*}" ] && [ "${now%%/*}" != 0 ]; then
          mark=${now#*/} from=current
        elif [ -n "${last%%/*}" ] && [ "${last%%/*}" != 0 ]; then
          mark=${last#*/} from=previous
        else
          mark=- from=
        fi
        case " $base " in
          *" $pod="*) seen=${base#* "$pod"=} seen=${seen%% *} ;;
          *)
            seen=-
            [ "$first$mode" != 1kept ] || seen=$mark
            base="$base $pod=$seen"
            ;;
        esac
        if [ "$mark" != "$seen" ]; then
          ZT_JOB_POD=$pod
          [ "$from" != previous ] || ZT_JOB_PREVIOUS=--previous
          return 2
        fi
        case $reason in
          ErrImagePull | ImagePullBackOff | InvalidImageName | CreateContainerConfigError)
            if [ "$mode" = fresh ] || [ $((SECONDS - start)) -ge "${ZT_JOB_PULL_GRACE:-330}" ]; then
              ZT_JOB_POD=$pod ZT_JOB_REASON=$reason
              return 3
            fi
            ;;
        esac
      done <<<"$pods"
      first=0
    fi
    [ $((SECONDS - start)) -lt "$limit" ] || return 4
    sleep 2
  done
}
