#!/usr/bin/env bash
# make bench-<name>: release builds + the benchmark, results in bench/results/<name>.md
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/bench.sh sidecar|mtls|mtls-instructions|fleet (the backend bench: scripts/bench-backend.sh, make bench-backend)}
case "$name" in
  sidecar|mtls|mtls-instructions|fleet) ;;
  backend) exec bash scripts/bench-backend.sh "${@:2}" ;;
  *) echo "scripts/bench.sh: unknown benchmark '$name' (sidecar|mtls|mtls-instructions|fleet; backend: scripts/bench-backend.sh)" >&2; exit 64 ;;
esac
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
bash scripts/tools.sh >/dev/null
tools=
# wrk is the load generator; HAProxy is the anchor the sidecars are compared
# with; valgrind's callgrind counts the inbound's instructions.
case "$name" in
  mtls) tools="wrk haproxy" ;;
  mtls-instructions) tools="wrk valgrind" ;;
esac
if [ -n "$tools" ]; then
  for tool in $tools; do
    command -v "$tool" >/dev/null && continue
    echo "[bench] installing Debian's $tool"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null ||
      { echo "[bench] FAILED to install $tool; retry with: sudo apt-get install -y $tool" >&2; exit 1; }
  done
fi
if [ "$name" = fleet ]; then
  # The chart's text is drawn with Debian's DejaVu Sans.
  if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    echo "[bench] installing Debian's fonts-dejavu-core (the chart's font)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null ||
      { echo "[bench] FAILED to install fonts-dejavu-core; retry with: sudo apt-get install -y fonts-dejavu-core" >&2; exit 1; }
  fi
  set -- "$@" ${SIZES:+--sizes "$SIZES"}
fi
target=${CARGO_TARGET_DIR:-target}
if [ "$name" = mtls-instructions ]; then
  # The anchor this build is compared with: BASE_REV=<commit> (built here,
  # in a target dir of its own: about 7 min on 2 cores) or BASE=<a zt-sidecar
  # binary>. Either is copied aside first, so that the build below cannot
  # replace it.
  base_dir=$target/bench-base
  mkdir -p "$base_dir"
  if [ -n "${BASE_REV:-}" ]; then
    rev=$(git rev-parse --verify --quiet "${BASE_REV}^{commit}") ||
      { echo "[bench] BASE_REV=$BASE_REV is not a commit of this repository" >&2; exit 64; }
    base_name=base-${rev:0:7}
    if [ ! -f "$base_dir/$base_name" ]; then
      src=$base_dir/src-${rev:0:7}
      rm -rf "$src"; git worktree prune
      git worktree add --detach --quiet "$src" "$rev"
      echo "[bench] building zt-sidecar at ${rev:0:7} (the anchor)"
      (cd "$src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked -p zt-sidecar)
      cp "$base_dir/target/release/zt-sidecar" "$base_dir/$base_name"
      git worktree remove --force "$src"
    fi
  elif [ -n "${BASE:-}" ]; then
    [ -f "$BASE" ] || { echo "[bench] BASE=$BASE is not a file (give a zt-sidecar binary, or BASE_REV=<commit> to build one)" >&2; exit 64; }
    base_name=base
    cp "$BASE" "$base_dir/$base_name"
  else
    echo "[bench] bench-mtls-instructions compares this build with an anchor: give BASE_REV=<commit> (built here, about 7 min on 2 cores), e.g. BASE_REV=8c142a7 (the inbound before it followed responses), or BASE=<a zt-sidecar binary>" >&2
    exit 64
  fi
  this=this-$(git rev-parse --short=7 HEAD)
  git diff --quiet HEAD -- sidecar Cargo.lock 2>/dev/null || this=$this-modified
  set -- "$@" --build "$base_name=$base_dir/$base_name" --build "$this=$target/release/zt-sidecar"
fi
cargo build --release --locked -p zt-sidecar -p zt-bench
exec "$target/release/zt-bench" "$name" --out "bench/results/$name.md" "${@:2}"
