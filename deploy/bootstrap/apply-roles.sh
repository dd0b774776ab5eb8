#!/bin/sh
# Applies policies/postgres/roles.sql (idempotent) as the PostgreSQL superuser,
# setting the password of the role OpenBao's database engine logs in with.
# Called by bootstrap.sh (step 4) and tested against a real PostgreSQL in
# deploy/checks/tests/bootstrap.rs.
#
#   PG_HOST, PG_PORT                  where PostgreSQL listens (a host or a socket folder)
#   PG_SUPERUSER_PASSWORD_FILE        the superuser's password
#   OPENBAO_PG_ADMIN_PASSWORD_FILE    the password to give openbao_admin
#   POLICIES                          the policies/ folder (default /opt/zt/policies)
#
# Passwords travel in the environment (readable only by this user), never in
# psql's argv, which `ps` shows to everyone; `\getenv` needs psql >= 15.
set -eu

: "${PG_HOST:?}" "${PG_PORT:?}" "${PG_SUPERUSER_PASSWORD_FILE:?}" "${OPENBAO_PG_ADMIN_PASSWORD_FILE:?}"
POLICIES=${POLICIES:-/opt/zt/policies}

for f in "$PG_SUPERUSER_PASSWORD_FILE" "$OPENBAO_PG_ADMIN_PASSWORD_FILE"; do
  if [ ! -s "$f" ]; then
    printf 'apply-roles: %s is missing or empty\n' "$f" >&2
    exit 1
  fi
  # Secret volumes are root-owned: without fsGroup the pod's user cannot read them.
  if [ ! -r "$f" ]; then
    printf 'apply-roles: %s is not readable by uid %s (gid %s, groups %s): give the pod fsGroup so its Secret files are group-readable\n' \
      "$f" "$(id -u)" "$(id -g)" "$(id -G)" >&2
    exit 1
  fi
done
PGPASSWORD=$(cat "$PG_SUPERUSER_PASSWORD_FILE") \
  OPENBAO_ADMIN_PASSWORD=$(cat "$OPENBAO_PG_ADMIN_PASSWORD_FILE") \
  PGCONNECT_TIMEOUT=10 \
  psql -q -X -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -c '\getenv openbao_admin_password OPENBAO_ADMIN_PASSWORD' \
  -f "$POLICIES/postgres/roles.sql"
