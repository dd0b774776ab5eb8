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
if [ "$name" = mtls ] || [ "$name" = mtls-instructions ]; then
  # wrk is the load generator; HAProxy is the anchor the sidecars are
  # compared with; valgrind's callgrind counts the inbound's instructions.
  for tool in wrk haproxy valgrind; do
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
cargo build --release --locked -p zt-sidecar -p zt-bench
if [ "$name" = mtls-instructions ] && [ -n "${BASE:-}" ]; then
  # BASE=<a zt-sidecar binary>: the anchor this build is compared with.
  [ -f "$BASE" ] || { echo "[bench] BASE=$BASE is not a file (give a zt-sidecar binary, e.g. one built from another commit)" >&2; exit 64; }
  set -- "$@" --build "base=$BASE" --build "this-build=${CARGO_TARGET_DIR:-target}/release/zt-sidecar"
fi
exec "${CARGO_TARGET_DIR:-target}/release/zt-bench" "$name" --out "bench/results/$name.md" "${@:2}"
