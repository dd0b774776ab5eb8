#!/usr/bin/env bash
# make bench-<name>: release builds + the benchmark, results in bench/results/<name>.md
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/bench.sh sidecar|mtls|backend}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
bash scripts/tools.sh >/dev/null
if [ "$name" = mtls ] && ! command -v wrk >/dev/null; then
  echo "[bench] installing Debian's wrk (load generator)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
    { echo "[bench] FAILED to install wrk; retry with: sudo apt-get install -y wrk" >&2; exit 1; }
fi
cargo build --release --locked -p zt-sidecar -p devstack
exec target/release/zt-bench "$name" --out "bench/results/$name.md" "${@:2}"
