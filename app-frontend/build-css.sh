#!/usr/bin/env bash
# Builds static/app.css from styles/app.css with the pinned Tailwind CLI
# (package.json + package-lock.json). The result is committed, so `cargo
# build` never needs npm; run this after changing templates, classes used in
# src/ or static/app.js.
#   ./build-css.sh          rebuild static/app.css
#   ./build-css.sh --check  fail if static/app.css is not what the sources produce
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v npm >/dev/null; then
  echo "build-css.sh: npm is required (Debian: apt-get install npm, or use Node.js >= 20)" >&2
  exit 1
fi
if [ ! -x node_modules/.bin/tailwindcss ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

out=static/app.css
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  node_modules/.bin/tailwindcss -i styles/app.css -o "$tmp" --minify 2>/dev/null
  if ! cmp -s "$tmp" "$out"; then
    echo "build-css.sh: $out is out of date; run app-frontend/build-css.sh and commit it" >&2
    exit 1
  fi
  echo "build-css.sh: $out is up to date"
else
  node_modules/.bin/tailwindcss -i styles/app.css -o "$out" --minify
  echo "build-css.sh: wrote $out ($(wc -c <"$out") bytes)"
fi
