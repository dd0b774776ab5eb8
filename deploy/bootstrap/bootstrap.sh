#!/bin/sh
# Runs inside the devstack image as the OpenBao bootstrap Job
# (deploy/k8s/openbao/bootstrap.yaml). Only orchestration lives here: OpenBao is
# configured by `devstack configure-openbao` from policies/openbao, PostgreSQL
# by policies/postgres/roles.sql, exactly as `make up` and the tests do.
# Every step is idempotent. Secret values are never printed.
set -eu

: "${BAO_ADDR:?}" "${KEYS_SECRET:?}" "${POD_NAMESPACE:?}" "${PG_HOST:?}" "${PG_PORT:?}"
: "${PG_SUPERUSER_PASSWORD_FILE:?}" "${OPENBAO_PG_ADMIN_PASSWORD_FILE:?}" "${JWKS_URL:?}" "${JWT_ISSUER:?}"
POLICIES=/opt/zt/policies
KEYS=/keys/keys.json

say() { printf 'bootstrap: %s\n' "$*" >&2; }
retry() { # retry <what> <command...>: up to 60 tries, 5 s apart
  what=$1; shift; n=0
  until "$@"; do
    n=$((n + 1))
    [ "$n" -lt 60 ] || { say "gave up waiting for $what"; return 1; }
    sleep 5
  done
}

say "1/5 initialising OpenBao at $BAO_ADDR (no-op when already initialised)"
retry "OpenBao to answer" devstack init-openbao --addr "$BAO_ADDR" --keys-out "$KEYS"

if [ -s "$KEYS" ]; then
  say "2/5 storing the new unseal key and root token in Secret $KEYS_SECRET (demo only)"
  kubectl -n "$POD_NAMESPACE" create secret generic "$KEYS_SECRET" --from-file=keys.json="$KEYS" >/dev/null
else
  say "2/5 reading the unseal key from Secret $KEYS_SECRET"
  umask 077
  kubectl -n "$POD_NAMESPACE" get secret "$KEYS_SECRET" -o 'jsonpath={.data.keys\.json}' | base64 -d >"$KEYS"
  [ -s "$KEYS" ] || { say "Secret $KEYS_SECRET is missing or empty, but OpenBao is already initialised: restore it or run make teardown"; exit 1; }
fi

say "3/5 unsealing OpenBao"
devstack unseal-openbao --addr "$BAO_ADDR" --keys "$KEYS"

say "4/5 applying policies/postgres/roles.sql on $PG_HOST:$PG_PORT"
retry "PostgreSQL to accept connections" pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
POLICIES=$POLICIES /opt/zt/apply-roles.sh

say "5/5 configuring OpenBao from policies/openbao"
retry "the SPIRE OIDC discovery provider" devstack configure-openbao --addr "$BAO_ADDR" --token-file "$KEYS" \
  --policies "$POLICIES/openbao" --jwks-url "$JWKS_URL" --issuer "$JWT_ISSUER" \
  --pg-host "$PG_HOST" --pg-port "$PG_PORT" --pg-admin-password-file "$OPENBAO_PG_ADMIN_PASSWORD_FILE"

rm -f "$KEYS"
say "done: OpenBao is unsealed and configured"
