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
# The physical path: a checkout reached through a symlink is still found.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
target=$1
shift

if [ "$(id -u)" -ne 0 ]; then
  case $target in
    test) why="three of its suites need it: the lab cluster (containerd and a kubelet in a network namespace), the injector's file test and the bootstrap Job test (processes run as other uids with setpriv). As yourself, \`cargo test --workspace\` runs every other suite (those three fail with the same reason)" ;;
    lab) why="it runs containerd and a kubelet in a network namespace" ;;
    test-faults) why="the secrets-dir-full fault mounts a small tmpfs (as yourself, \`make test-faults ZT_FAULTS=<the others>\` runs the rest)" ;;
    *) why="it needs root" ;;
  esac
  printf '[%s] make %s runs as root: %s.\n' "$target" "$target" "$why" >&2
  printf '[%s] Run it as root with Rust and Go on root'"'"'s PATH: `sudo -i`, then `cd %s && make %s` (`sudo make %s` from your own shell cannot find cargo: sudo'"'"'s secure_path drops ~/.cargo/bin).\n' \
    "$target" "$root" "$target" "$target" >&2
  exit 1
fi

owner=$(stat -c %u:%g "$root")
give_back() {
  [ "${owner%%:*}" = 0 ] && return
  if find "$root" -xdev -uid 0 -print0 | xargs -0 -r chown -h "$owner"; then
    printf '[%s] what root wrote in this checkout belongs to uid %s again (its owner)\n' "$target" "${owner%%:*}"
  else
    printf '[%s] could not give everything root wrote in %s back to uid %s: run `chown -R %s %s` as root\n' \
      "$target" "$root" "${owner%%:*}" "$owner" "$root" >&2
  fi
}
# A checkout of root's own (CI): nothing to give back; the command runs in
# this process's place.
[ "${owner%%:*}" = 0 ] && exec "$@"
# Else the command runs in the background of this script, in the same
# process group (so the terminal's Ctrl-C and hangup reach it directly, once,
# and it keeps the terminal and its standard input), with SIGINT and
# SIGQUIT back at their defaults (bash would have it ignore them); this
# script outlives them and passes SIGTERM (make sends it to its child only)
# and SIGHUP (the terminal's hangup may reach only this script) on. When
# the command has ended, the files are given back.
child=
pass_on() { [ -n "$child" ] && kill "-$1" "$child" 2>/dev/null; }
trap ':' INT QUIT
trap 'pass_on TERM' TERM
trap 'pass_on HUP' HUP
env --default-signal=INT,QUIT "$@" 0<&0 &
child=$!
# A signal ends `wait` early; wait again until the command has ended, then
# take its status (bash keeps it for the last `wait`).
while kill -0 "$child" 2>/dev/null; do wait "$child"; done
wait "$child"
rc=$?
give_back
exit "$rc"
