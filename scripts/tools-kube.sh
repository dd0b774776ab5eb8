# The Kubernetes part of `make tools` (`scripts/tools.sh kube`, run by
# `make tools-kube` and `make test`, never by `make up`). Sourced by tools.sh,
# whose helpers (say, fail, finish, $bin, $check_only, $missing) it uses.
#
#   etcd            go install go.etcd.io/etcd/server/v3   (tools/etcd/go.mod)
#   kube-apiserver, kubectl, kubelet, kube-controller-manager, kube-scheduler,
#   kube-proxy      go install k8s.io/kubernetes/cmd/...   (tools/kubernetes/go.mod)
#
# Both modules are pinned (deploy/versions.env: ETCD_VERSION, KUBE_TOOLS_VERSION;
# a mismatch with the go.mod stops the build). The build uses a Go build cache of
# its own under .tools/, removed once the binaries are installed: they are what
# later runs reuse, and the cache (about 4 GiB) is never needed again.

kube_cmds=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy)
kube_stamp="$bin/.kube-tools"
kube_want="etcd=$ETCD_VERSION kubernetes=$KUBE_TOOLS_VERSION"

kube_ok() {
  local c
  for c in etcd "${kube_cmds[@]}"; do [ -x "$bin/$c" ] || return 1; done
  [ "$(cat "$kube_stamp" 2>/dev/null)" = "$kube_want" ]
}

if kube_ok; then
  say "Kubernetes tools present (etcd $ETCD_VERSION, Kubernetes $KUBE_TOOLS_VERSION)"
  finish tools-kube "Kubernetes tools"
fi
if $check_only; then
  missing+=("etcd $ETCD_VERSION + Kubernetes $KUBE_TOOLS_VERSION (${kube_cmds[*]})")
  finish tools-kube "Kubernetes tools"
fi

grep -Eq "^[[:space:]]*go.etcd.io/etcd/server/v3 v${ETCD_VERSION}( |\$)" tools/etcd/go.mod ||
  fail "etcd: version pin" "edit tools/etcd/go.mod so it requires go.etcd.io/etcd/server/v3 v$ETCD_VERSION (deploy/versions.env)"
grep -Eq "^[[:space:]]*(require )?k8s.io/kubernetes v${KUBE_TOOLS_VERSION}( |\$)" tools/kubernetes/go.mod ||
  fail "kubernetes: version pin" "edit tools/kubernetes/go.mod so it requires k8s.io/kubernetes v$KUBE_TOOLS_VERSION (deploy/versions.env)"
command -v go >/dev/null || fail "kubernetes: go toolchain" "install Go >= 1.26 (https://go.dev/doc/install), then make tools-kube"
# The Go build cache of this build alone peaks at about 4 GiB, on top of the binaries.
gocache="$tools/.go-build-kube"
ZT_DISK_NEED_MB=${ZT_KUBE_DISK_NEED_MB:-5120} bash "$root/scripts/disk-check.sh" "$gocache" ||
  fail "kubernetes: disk space" "free some space, then make tools-kube"

export GOCACHE="$gocache" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
started=$SECONDS
say "building etcd $ETCD_VERSION (go install, about a minute on 2 cores)..."
(cd tools/etcd && GOBIN="$bin" go install -trimpath -ldflags "-s -w" go.etcd.io/etcd/server/v3) ||
  fail "etcd: go install" "make tools-kube   (Go module proxy must be reachable)"
# go install names the binary after the module path without its /v3: "server".
mv -f "$bin/server" "$bin/etcd"

# The version the binaries report (`kube-apiserver --version`): upstream's
# hack/lib/version.sh links the same variables in.
minor=${KUBE_TOOLS_VERSION#*.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$KUBE_TOOLS_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
say "building Kubernetes $KUBE_TOOLS_VERSION: ${kube_cmds[*]} (go install, 6 to 12 minutes on 2 cores)..."
(cd tools/kubernetes && GOBIN="$bin" go install -trimpath -ldflags "$ldflags" \
  "${kube_cmds[@]/#/k8s.io/kubernetes/cmd/}") ||
  fail "kubernetes: go install" "make tools-kube   (Go module proxy must be reachable)"
"$bin/kube-apiserver" --version | grep -qx "Kubernetes v$KUBE_TOOLS_VERSION" ||
  fail "kubernetes: version check" "rm -f .tools/bin/kube* && make tools-kube"
printf '%s\n' "$kube_want" >"$kube_stamp"
rm -rf "$gocache"
say "etcd $ETCD_VERSION and Kubernetes $KUBE_TOOLS_VERSION installed in .tools/bin ($((SECONDS - started)) s)"
finish tools-kube "Kubernetes tools"
