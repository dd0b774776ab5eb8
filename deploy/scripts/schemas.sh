#!/usr/bin/env bash
# Fetches, pinned and idempotently, what the deploy tests install into the real
# kube-apiserver besides our own manifests, into .tools/schemas/ (git-ignored),
# and builds helm into .tools/bin:
#
#   cilium-<CILIUM_VERSION>/crds/*.yaml            Cilium's CRDs     } github.com/cilium/cilium
#   cilium-<CILIUM_VERSION>/chart/                 Cilium's Helm chart (values.schema.json) }
#   spire-crds-<ISTIO_MODULE_VERSION>/crds.yaml    the only spire-controller-manager CRDs the
#                                                  Go module proxy serves (istio.io/istio's
#                                                  samples: ClusterSPIFFEID and
#                                                  ClusterFederatedTrustDomain of 0.2.3;
#                                                  github.com/spiffe/spire-controller-manager
#                                                  itself is refused: 403)
#   .tools/bin/helm (HELM_VERSION)                 renders the Cilium chart; installs zt-injector
#
# Everything comes from the Go module proxy through `go mod download` / `go
# install`, which verify checksums. Called by the deploy-checks tests when
# something is missing; `make tools` may call it too.
set -euo pipefail
# shellcheck source=lib.sh
case ${BASH_SOURCE[0]} in */*) zt_scripts=${BASH_SOURCE[0]%/*} ;; *) zt_scripts=. ;; esac
. "$zt_scripts/lib.sh"
ZT_STEP=schemas

out=$ZT_ROOT/.tools/schemas
bin=$ZT_ROOT/.tools/bin
mkdir -p "$out" "$bin"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

cilium_dir=$out/cilium-$CILIUM_VERSION
spire_dir=$out/spire-crds-$ISTIO_MODULE_VERSION
helm_ok() { [ -x "$bin/helm" ] && [ -f "$bin/.helm-$HELM_VERSION" ]; }
if [ -f "$cilium_dir/.complete" ] && [ -f "$spire_dir/.complete" ] && helm_ok; then
  say "schemas present (.tools/schemas)"
  exit 0
fi
command -v go >/dev/null || die "the Go toolchain is needed to fetch the schemas (install Go >= 1.26.6, see README.md#prerequisites-and-how-the-real-components-arrive)"

# Only one run at a time (tests may call this concurrently).
exec 9>"$out/.lock"
if command -v flock >/dev/null; then flock 9; fi

# module_dir MODULE@VERSION: download (checksum-verified) and print its folder.
module_dir() {
  local tmp json dir
  tmp=$(mktemp -d)
  json=$( (cd "$tmp" && go mod download -json "$1") ) || { rm -rf "$tmp"; die "go mod download $1 failed (Go module proxy reachable?)"; }
  rm -rf "$tmp"
  dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [ -n "$dir" ] && [ -d "$dir" ] || die "go mod download $1 gave no folder: $json"
  printf '%s\n' "$dir"
}

if [ ! -f "$cilium_dir/.complete" ]; then
  say "Cilium $CILIUM_VERSION CRDs and Helm chart (github.com/cilium/cilium)"
  src=$(module_dir "github.com/cilium/cilium@v$CILIUM_VERSION")
  rm -rf "$cilium_dir" && mkdir -p "$cilium_dir/crds"
  cp "$src"/pkg/k8s/apis/cilium.io/client/crds/v2/*.yaml "$cilium_dir/crds/"
  cp -r "$src/install/kubernetes/cilium" "$cilium_dir/chart"
  chmod -R u+w "$cilium_dir"
  touch "$cilium_dir/.complete"
fi

if [ ! -f "$spire_dir/.complete" ]; then
  say "spire-controller-manager CRDs (istio.io/istio samples/security/spire)"
  src=$(module_dir "istio.io/istio@$ISTIO_MODULE_VERSION")
  rm -rf "$spire_dir" && mkdir -p "$spire_dir"
  # Only the CustomResourceDefinition documents of the sample.
  awk 'function flush() { if (doc ~ /\nkind: CustomResourceDefinition\n/) { printf "%s---\n", doc; n++ } doc = "\n" }
       BEGIN { doc = "\n" }
       /^---/ { flush(); next }
       { doc = doc $0 "\n" }
       END { flush(); if (n != 2) exit 1 }' \
    "$src/samples/security/spire/spire-quickstart.yaml" >"$spire_dir/crds.yaml" ||
    die "expected 2 CRDs in istio.io/istio's samples/security/spire/spire-quickstart.yaml"
  touch "$spire_dir/.complete"
fi

if ! helm_ok; then
  say "building helm $HELM_VERSION (go install, about 2 minutes on 2 cores)"
  GOBIN=$bin go install -buildvcs=false "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" ||
    die "go install helm.sh/helm/v3/cmd/helm@v$HELM_VERSION failed"
  rm -f "$bin"/.helm-*
  touch "$bin/.helm-$HELM_VERSION"
fi
say "schemas ready in .tools/schemas"
