#!/bin/sh
# Runs inside the zt-bootstrap image as the OpenBao bootstrap Job
# (deploy/k8s/openbao/bootstrap.yaml). Only orchestration lives here: OpenBao is
# configured by `zt-bootstrap configure-openbao` from policies/openbao, PostgreSQL
# by policies/postgres/roles.sql, exactly as `make up` and the tests do.
# Secret values are never printed and never on a command line.
#
# Every run starts from whatever an earlier run left behind, and decides from
# two facts — does the Secret $KEYS_SECRET exist, is OpenBao initialised — plus
# the keys file an earlier attempt of the same pod may have left in $KEYS_DIR
# (an emptyDir: kept across container restarts, lost with the pod):
#
#   Secret  OpenBao        keys file  →  what this run does
#   yes     initialised    any        →  read the keys from the Secret, go on
#   yes     uninitialised  any        →  stop: the Secret belongs to an earlier OpenBao
#   no      uninitialised  any        →  init, store the keys at once, go on
#   no      initialised    yes        →  store the keys (an earlier attempt was
#                                        killed between init and store), go on
#   no      initialised    no         →  stop: the unseal key is lost (recovery steps printed)
#
# The only window that can lose the key is between `init` returning and the
# Secret being created: one kubectl call, after a server-side dry run has
# already shown that the create will be allowed. Every later step is idempotent.
#
# ZT_BOOTSTRAP_FAULT=<step> kills this script (SIGKILL) right after <step>
# (init, store, unseal, roles, configure), as a lost pod would be killed:
# used by deploy/checks/tests/bootstrap_job.rs to prove every kill point.
set -eu

: "${BAO_ADDR:?}" "${KEYS_SECRET:?}" "${POD_NAMESPACE:?}" "${PG_HOST:?}" "${PG_PORT:?}"
: "${PG_SUPERUSER_PASSWORD_FILE:?}" "${OPENBAO_PG_ADMIN_PASSWORD_FILE:?}" "${JWKS_URL:?}" "${JWT_ISSUER:?}"
POLICIES=${POLICIES:-/opt/zt/policies}
KEYS_DIR=${KEYS_DIR:-/keys}
KEYS=$KEYS_DIR/keys.json
APPLY_ROLES=${APPLY_ROLES:-/opt/zt/apply-roles.sh}
RETRIES=${ZT_BOOTSTRAP_RETRIES:-60}

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }
retry() { # retry <what> <command...>: up to $RETRIES tries, 5 s apart
  what=$1; shift; n=0
  until "$@"; do
    n=$((n + 1))
    [ "$n" -lt "$RETRIES" ] || { say "gave up waiting for $what"; return 1; }
    sleep 5
  done
}
fault_point() {
  if [ "${ZT_BOOTSTRAP_FAULT:-}" = "$1" ]; then
    say "fault injected after step '$1' (ZT_BOOTSTRAP_FAULT)"
    kill -KILL $$
  fi
}
k() { kubectl -n "$POD_NAMESPACE" "$@"; }
store_keys() {
  retry "the Kubernetes API to store Secret $KEYS_SECRET" \
    k create secret generic "$KEYS_SECRET" --from-file=keys.json="$KEYS" -o name >/dev/null
}

say "1/5 reading the state: Secret $POD_NAMESPACE/$KEYS_SECRET, OpenBao at $BAO_ADDR"
secret=$(retry "the Kubernetes API" k get secret "$KEYS_SECRET" --ignore-not-found -o name)
state=$(retry "OpenBao to answer" zt-bootstrap openbao-state --addr "$BAO_ADDR")
umask 077
if [ -n "$secret" ]; then
  [ "$state" != uninitialised ] || die "Secret $POD_NAMESPACE/$KEYS_SECRET holds the keys of an earlier OpenBao, but OpenBao at $BAO_ADDR is new (uninitialised; its volume was replaced). If that earlier OpenBao is gone for good, delete the stale Secret and run make install again:
    kubectl -n $POD_NAMESPACE delete secret $KEYS_SECRET"
  say "2/5 OpenBao is initialised; reading its unseal key from Secret $KEYS_SECRET"
  k get secret "$KEYS_SECRET" -o 'jsonpath={.data.keys\.json}' | base64 -d >"$KEYS"
  [ -s "$KEYS" ] || die "Secret $POD_NAMESPACE/$KEYS_SECRET has no keys.json"
elif [ "$state" = uninitialised ]; then
  # Prove the create will be allowed before there is a key to lose.
  retry "the Kubernetes API (dry run of the Secret)" \
    k create secret generic "$KEYS_SECRET" --from-literal=keys.json=probe --dry-run=server -o name >/dev/null
  rm -f "$KEYS"
  say "2/5 initialising OpenBao (one Shamir key share) and storing the keys in Secret $KEYS_SECRET (demo only)"
  zt-bootstrap init-openbao --addr "$BAO_ADDR" --keys-out "$KEYS"
  [ -s "$KEYS" ] || die "zt-bootstrap init-openbao wrote no keys"
  fault_point init
  store_keys || die "OpenBao is initialised but its keys could not be stored in Secret $KEYS_SECRET; they are kept in $KEYS for the Job's next attempt in this pod (restartPolicy OnFailure): fix the Kubernetes API access, the Job retries by itself"
elif [ -s "$KEYS" ]; then
  say "2/5 OpenBao is initialised and an earlier attempt left its keys here: storing them in Secret $KEYS_SECRET"
  store_keys || die "could not store the keys in Secret $KEYS_SECRET; they stay in $KEYS for the next attempt"
else
  die "OpenBao at $BAO_ADDR is initialised, but its unseal key is in neither Secret $POD_NAMESPACE/$KEYS_SECRET nor this pod: the bootstrap pod was lost between 'init' and storing the key, and OpenBao's data can never be unsealed again. To start over with an empty OpenBao (every secret in it is lost; PostgreSQL keeps its data):
    kubectl -n $POD_NAMESPACE delete statefulset openbao
    kubectl -n $POD_NAMESPACE delete pvc data-openbao-0
    make install"
fi
fault_point store

say "3/5 unsealing OpenBao"
zt-bootstrap unseal-openbao --addr "$BAO_ADDR" --keys "$KEYS"
fault_point unseal

say "4/5 applying policies/postgres/roles.sql on $PG_HOST:$PG_PORT"
# The image's user has no passwd entry: libpq cannot guess a user name, and
# pg_isready without -U answers "no attempt" without connecting.
retry "PostgreSQL to accept connections" pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres
POLICIES=$POLICIES "$APPLY_ROLES"
fault_point roles

say "5/5 configuring OpenBao from policies/openbao"
retry "the SPIRE OIDC discovery provider" zt-bootstrap configure-openbao --addr "$BAO_ADDR" --token-file "$KEYS" \
  --policies "$POLICIES/openbao" --jwks-url "$JWKS_URL" --issuer "$JWT_ISSUER" \
  --pg-host "$PG_HOST" --pg-port "$PG_PORT" --pg-admin-password-file "$OPENBAO_PG_ADMIN_PASSWORD_FILE"
fault_point configure

rm -f "$KEYS"
say "done: OpenBao is unsealed and configured"
