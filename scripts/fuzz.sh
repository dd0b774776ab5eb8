#!/usr/bin/env bash
# make fuzz: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default
# 60) each, starting from the committed corpus (fuzz/corpus/<target>/), and
# writes the figures to bench/results/fuzz.md.
#
#   FUZZ_SECONDS=300 make fuzz          longer runs
#   FUZZ_TARGETS="frontend_next" make fuzz
#
# cargo-fuzz (crates.io, pinned below) is installed into .tools/cargo-fuzz;
# it needs a nightly toolchain (-Zsanitizer). New inputs a run finds go to
# fuzz/.work/<target>/ (git-ignored); a crash is saved in
# fuzz/artifacts/<target>/ and fails the run after the table is written:
# turn it into a regression test (`cargo fuzz fmt <target> <file>` shows it).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=../deploy/versions.env
. deploy/versions.env

tools="$root/.tools"
seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-proxy_normalise sidecar_config backend_secret_files frontend_next inbound_head}"
out="$root/bench/results/fuzz.md"
say() { printf '[fuzz] %s\n' "$*"; }
fail() { printf '[fuzz] %s\n[fuzz] %s\n' "$1" "$2" >&2; exit 1; }

rustup toolchain list 2>/dev/null | grep -q '^nightly' ||
  fail "cargo fuzz needs a nightly toolchain, and none is installed." \
    "Install one with: rustup toolchain install nightly --profile minimal"

cargo_fuzz="$tools/cargo-fuzz/bin/cargo-fuzz"
if [ "$("$cargo_fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io into $tools/cargo-fuzz..."
  cargo install --quiet --locked --force --root "$tools/cargo-fuzz" cargo-fuzz --version "$CARGO_FUZZ_VERSION" ||
    fail "cargo install cargo-fuzz failed." "Retry: make fuzz   (crates.io must be reachable)"
fi
export PATH="$tools/cargo-fuzz/bin:$PATH"

cd fuzz
say "building the targets (nightly, AddressSanitizer, coverage instrumentation)..."
cargo +nightly fuzz build 2>&1 | tail -5

mkdir -p .work "$(dirname "$out")"
rows=()
crashed=()
for t in $targets; do
  mkdir -p ".work/$t"
  log=".work/$t.log"
  seeds=$(find "corpus/$t" -type f | wc -l)
  earlier=$(find ".work/$t" -type f | wc -l)
  say "$t: ${seconds}s"
  # -rss_limit_mb keeps a runaway input from taking the machine; new inputs
  # go to .work/<target> first, the committed corpus is only read.
  if ! cargo +nightly fuzz run "$t" ".work/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1; then
    crashed+=("$t")
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # The last status line: "#N <event> cov: C ft: F corp: K/S ...".
  status=$(grep -E '^#[0-9]+' "$log" | grep ' cov: ' | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$status")
  result=ok
  [[ " ${crashed[*]:-} " == *" $t "* ]] && result="**crash** (fuzz/artifacts/$t/)"
  rows+=("| \`$t\` | ${seconds} | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $seeds + $earlier | ${corp:-?} | $result |")
  say "$t: ${execs:-?} executions, ${rate:-?}/s, cov ${cov:-?}, ft ${ft:-?}: $result"
done

{
  echo "# Fuzzing (make fuzz)"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)), one libFuzzer process per"
  echo "target in turn, each for ${seconds} s from the committed corpus (fuzz/corpus/) plus"
  echo "what earlier runs on this machine added (fuzz/.work/, git-ignored);"
  echo "cargo-fuzz $CARGO_FUZZ_VERSION, $(rustc +nightly --version), AddressSanitizer."
  echo "\`cov\` is libFuzzer's count of covered edges, \`ft\` its features (edges with"
  echo "hit counts and more); \`corpus\` is what the run ended with (inputs/bytes)."
  echo
  echo "| target | seconds | executions | exec/s | cov | ft | start inputs (committed + earlier) | corpus at end | result |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Each target calls a crate's \`fuzzing\` module; \`make test\` replays the"
  echo "committed corpus through the same functions and runs proptest properties of"
  echo "their invariants (\`tests/fuzz_replay.rs\` in zt-sidecar, app-backend, app-frontend)."
} >"$out"
say "figures in ${out#"$root"/}"

if [ ${#crashed[@]} -gt 0 ]; then
  fail "crash in: ${crashed[*]} (inputs in fuzz/artifacts/, logs in fuzz/.work/<target>.log)" \
    "reproduce with: cd fuzz && cargo +nightly fuzz run <target> <artifact>"
fi
