#!/usr/bin/env bash
# Stops a build early, with the figures, when the disk cannot hold it; otherwise
# the compiler dies half-way with "No space left on device" inside a linker.
#
#   scripts/disk-check.sh [DIR]      DIR: the cargo target directory (default: target)
#
# ZT_DISK_NEED_MB (default 3072) is what a build from nothing needs: a fresh
# `make test` build is about 2.1 GiB, plus room for test state in /tmp. What DIR
# already holds counts towards it (a warm build only relinks), but at least
# 512 MiB must stay free. Nothing is written or deleted.
set -euo pipefail

dir=${1:-target}
need_mb=${ZT_DISK_NEED_MB:-3072}
case "$need_mb" in
  '' | *[!0-9]* | ??????????*)
    echo "[disk] ZT_DISK_NEED_MB must be a whole number of MiB (at most 9 digits), got '$need_mb'" >&2
    exit 2
    ;;
esac

# The filesystem DIR will live on, even before the first build creates it.
probe=$dir
while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done

free_kb=$(df -Pk "$probe" | awk 'NR == 2 { print $4 }')
held_kb=0
[ -d "$dir" ] && held_kb=$(du -sk "$dir" 2>/dev/null | cut -f1)
want_kb=$((need_mb * 1024 - held_kb))
[ "$want_kb" -lt $((512 * 1024)) ] && want_kb=$((512 * 1024))

if [ "$free_kb" -lt "$want_kb" ]; then
  mount=$(df -Pk "$probe" | awk 'NR == 2 { print $6 }')
  printf '[disk] only %d MiB free on %s (for %s/); this build needs about %d MiB free.\n' \
    $((free_kb / 1024)) "$mount" "$dir" $((want_kb / 1024)) >&2
  printf '[disk] Free some space (e.g. `cargo clean` in other checkouts, old /tmp/devstack-* dirs),\n' >&2
  printf '[disk] or set ZT_DISK_NEED_MB=<MiB> if you know this build needs less (default 3072).\n' >&2
  exit 1
fi
