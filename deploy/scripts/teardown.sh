#!/usr/bin/env bash
# make teardown: delete the kind cluster created by make deploy (with every
# volume and generated secret in it). Docker images zt-platform/*:dev stay.
set -euo pipefail
# shellcheck source=lib.sh
case ${BASH_SOURCE[0]} in */*) zt_scripts=${BASH_SOURCE[0]%/*} ;; *) zt_scripts=. ;; esac
. "$zt_scripts/lib.sh"
ZT_STEP=teardown
require_tools kind
# Not `kind get clusters | grep -q`: under pipefail, grep exiting at the first
# match can make kind die of SIGPIPE and the pipeline report failure.
clusters=$(kind get clusters 2>/dev/null || true)
if grep -qx "$CLUSTER" <<<"$clusters"; then
  say "deleting kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER"
else
  say "no kind cluster named $CLUSTER: nothing to do"
fi
