#!/usr/bin/env bash
# make bench-backend: the backend's benchmark on the real stack (devstack +
# zt-sidecar + release app-backend), measured with Debian's wrk; writes
# bench/results/backend.md. Extra arguments go to the benchmark (--secs N).
# Safe to re-run: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

bash scripts/tools.sh >/dev/null
# The load generator: Debian 12's wrk (4.1.0-3), the version the results name.
if ! command -v wrk >/dev/null; then
  echo "[bench-backend] installing Debian's wrk (load generator)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
    { echo "[bench-backend] FAILED to install wrk; retry with: sudo apt-get install -y wrk" >&2; exit 1; }
fi
wrk_version=$(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo unknown)
case "$wrk_version" in
  4.1.0-*) ;;
  *) echo "[bench-backend] note: wrk $wrk_version (results were taken with 4.1.0)" >&2 ;;
esac

cargo build --release --locked -p zt-sidecar -p app-backend -p zt-bench --bins
target_dir=${CARGO_TARGET_DIR:-target}
exec "$target_dir/release/zt-bench" backend --out bench/results/backend.md "$@"
