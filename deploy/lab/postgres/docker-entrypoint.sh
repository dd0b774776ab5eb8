#!/bin/sh
# The lab's stand-in for the official postgres image's docker-entrypoint.sh
# (which cannot be pulled here): the parts deploy/k8s/postgres/postgres.yaml
# relies on. On the first start, initdb as superuser `postgres` with the
# password from $POSTGRES_PASSWORD_FILE, scram-sha-256 for every TCP client and
# listening on all addresses, as the official image sets it up; then run the
# command (`postgres`).
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -s "${POSTGRES_PASSWORD_FILE:-}" ] || { echo "docker-entrypoint.sh: POSTGRES_PASSWORD_FILE is missing or empty" >&2; exit 1; }
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  initdb -D "$PGDATA" -U postgres --pwfile="$POSTGRES_PASSWORD_FILE" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-instructions
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
fi
exec "$@"
