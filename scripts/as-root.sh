#!/usr/bin/env bash
# Runs a make target that needs root (`make test`, `make lab`,
# `make test-faults`).
#
#   scripts/as-root.sh <target> <command...>
#
# Not root: says why the target needs it and how to run it, before anything
# long starts. Root in a checkout that belongs to another user (the README's
# way: `make test` as root, `make up` as yourself, in one checkout): when the
# command ends (pass, fail or Ctrl-C), everything root wrote in the checkout
# (target/, .tools/, ...) is given back to the checkout's owner, so that
# user's next `make up` can build where `make test` did.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=$1
shift

if [ "$(id -u)" -ne 0 ]; then
  case $target in
    test) why="three of its suites need it: the lab cluster (containerd and a kubelet in a network namespace), the injector's file test and the bootstrap Job test (processes run as other uids with setpriv). As yourself, \`cargo test --workspace\` runs every other suite (those three fail with the same reason)" ;;
    lab) why="it runs containerd and a kubelet in a network namespace" ;;
    test-faults) why="the secrets-dir-full fault mounts a small tmpfs (as yourself, ZT_FAULTS=<the others> cargo test -p devstack --test faults runs the rest)" ;;
    *) why="it needs root" ;;
  esac
  printf '[%s] make %s runs as root: %s.\n' "$target" "$target" "$why" >&2
  printf '[%s] Run it as root with Rust and Go on root'"'"'s PATH: `sudo -i`, then `cd %s && make %s` (`sudo make %s` from your own shell cannot find cargo: sudo'"'"'s secure_path drops ~/.cargo/bin).\n' \
    "$target" "$root" "$target" "$target" >&2
  exit 1
fi

owner=$(stat -c %u:%g "$root")
give_back() {
  [ "$owner" = 0:0 ] && return
  find "$root" -xdev -uid 0 -print0 2>/dev/null | xargs -0 -r chown -h "$owner" 2>/dev/null
  printf '[%s] what root wrote in this checkout belongs to uid %s again (its owner)\n' "$target" "${owner%%:*}"
}
# Ctrl-C reaches the command (same process group); this script waits for it
# to end, then gives the files back.
trap ':' INT TERM
"$@"
rc=$?
give_back
exit "$rc"
