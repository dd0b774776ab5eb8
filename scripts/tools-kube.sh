# The Kubernetes part of `make tools` (`scripts/tools.sh kube`, run by
# `make tools-kube` and `make test`, never by `make up`). Sourced by tools.sh,
# whose helpers (say, fail, finish, as_root, $bin, $check_only, $missing) it uses.
#
#   etcd                     go install go.etcd.io/etcd/server/v3          (tools/etcd)
#   kube-apiserver, kubectl, kubelet, kube-controller-manager, kube-scheduler,
#   kube-proxy               go install k8s.io/kubernetes/cmd/...          (tools/kubernetes)
#   coredns                  go install of tools/coredns (only the plugins the lab's DNS needs)
#   local-path-provisioner   go install github.com/rancher/local-path-provisioner
#   pause                    gcc -static of pause.c from the k8s.io/kubernetes module
#   containerd, runc, CNI plugins, iptables, busybox-static   Debian's packages
#
# Every Go module is pinned (deploy/versions.env; a mismatch with its go.mod
# stops the build). Each part is skipped when its binaries and stamp are there.

kube_cmds=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy)
stamp_ok() { [ "$(cat "$bin/.$1" 2>/dev/null)" = "$2" ]; }
stamp() { printf '%s\n' "$2" >"$bin/.$1"; }
have_all() { local c; for c in "$@"; do [ -x "$bin/$c" ] || return 1; done; }

# part NAME WANT BINARIES...: true when the part is installed at WANT.
part_ok() { local name=$1 want=$2; shift 2; have_all "$@" && stamp_ok "$name" "$want"; }
debian_ok() {
  [ -x /usr/bin/containerd ] && [ -x /usr/bin/ctr ] && [ -x /usr/sbin/runc ] &&
    [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] &&
    [ -x /usr/lib/cni/loopback ] && command -v iptables >/dev/null && [ -x /bin/busybox ] &&
    command -v setpriv >/dev/null
}

want_etcd="etcd=$ETCD_VERSION"
want_kube="kubernetes=$KUBE_TOOLS_VERSION"
want_coredns="coredns=$COREDNS_VERSION"
want_lpp="local-path-provisioner=$LOCAL_PATH_PROVISIONER_VERSION"
want_pause="pause=kubernetes-$KUBE_TOOLS_VERSION"
all_ok() {
  part_ok kube-etcd "$want_etcd" etcd && part_ok kube-tools "$want_kube" "${kube_cmds[@]}" &&
    part_ok kube-coredns "$want_coredns" coredns &&
    part_ok kube-local-path "$want_lpp" local-path-provisioner &&
    part_ok kube-pause "$want_pause" pause && debian_ok
}

if all_ok; then
  say "Kubernetes tools present (etcd $ETCD_VERSION, Kubernetes $KUBE_TOOLS_VERSION, CoreDNS $COREDNS_VERSION, local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION, containerd)"
  finish tools-kube "Kubernetes tools"
fi
if $check_only; then
  missing+=("Kubernetes tools (etcd, ${kube_cmds[*]}, coredns, local-path-provisioner, pause, containerd/runc/CNI)")
  finish tools-kube "Kubernetes tools"
fi

command -v go >/dev/null || fail "kubernetes: go toolchain" "install Go >= 1.26.6 (https://go.dev/doc/install), then make tools-kube"
# A cold Go build cache grows by about 5 GiB for these builds.
ZT_DISK_NEED_MB=${ZT_KUBE_DISK_NEED_MB:-6144} bash "$root/scripts/disk-check.sh" "$(go env GOCACHE)" ||
  fail "kubernetes: disk space" "free some space, then make tools-kube"
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
started=$SECONDS

# pin_check DIR MODULE VERSION: the go.mod in DIR requires MODULE at VERSION.
pin_check() {
  grep -Eq "^[[:space:]]*(require )?$2 v$3( |\$)" "tools/$1/go.mod" ||
    fail "$1: version pin" "edit tools/$1/go.mod so it requires $2 v$3 (deploy/versions.env)"
}

if ! debian_ok; then
  say "installing Debian's containerd, runc, containernetworking-plugins, iptables, busybox-static (the lab node)..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      containerd runc containernetworking-plugins iptables busybox-static util-linux >/dev/null ||
    fail "lab node: apt-get install" "sudo apt-get install -y containerd runc containernetworking-plugins iptables busybox-static && make tools-kube"
  # Debian's package starts containerd as a service where systemd runs; the lab runs its own.
  debian_ok || fail "lab node: locate containerd/runc/CNI" "check /usr/bin/containerd, /usr/sbin/runc, /usr/lib/cni/bridge"
fi

if ! part_ok kube-etcd "$want_etcd" etcd; then
  pin_check etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  say "building etcd $ETCD_VERSION (go install)..."
  (cd tools/etcd && GOBIN="$bin" go install -trimpath -ldflags "-s -w" go.etcd.io/etcd/server/v3) ||
    fail "etcd: go install" "make tools-kube   (Go module proxy must be reachable)"
  # go install names the binary after the module path without its /v3: "server".
  mv -f "$bin/server" "$bin/etcd"
  stamp kube-etcd "$want_etcd"
fi

if ! part_ok kube-tools "$want_kube" "${kube_cmds[@]}"; then
  pin_check kubernetes k8s.io/kubernetes "$KUBE_TOOLS_VERSION"
  # The version the binaries report (`kube-apiserver --version`): upstream's
  # hack/lib/version.sh links the same variables in.
  minor=${KUBE_TOOLS_VERSION#*.}
  minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$KUBE_TOOLS_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  say "building Kubernetes $KUBE_TOOLS_VERSION: ${kube_cmds[*]} (go install, 10 to 20 minutes on 2 cores with an empty Go cache)..."
  (cd tools/kubernetes && GOBIN="$bin" go install -trimpath -ldflags "$ldflags" \
    "${kube_cmds[@]/#/k8s.io/kubernetes/cmd/}") ||
    fail "kubernetes: go install" "make tools-kube   (Go module proxy must be reachable)"
  "$bin/kube-apiserver" --version | grep -qx "Kubernetes v$KUBE_TOOLS_VERSION" ||
    fail "kubernetes: version check" "rm -f .tools/bin/kube* && make tools-kube"
  stamp kube-tools "$want_kube"
fi

if ! part_ok kube-coredns "$want_coredns" coredns; then
  pin_check coredns github.com/coredns/coredns "$COREDNS_VERSION"
  say "building CoreDNS $COREDNS_VERSION (the lab's cluster DNS; go install)..."
  (cd tools/coredns && GOBIN="$bin" go install -trimpath -ldflags "-s -w" .) ||
    fail "coredns: go install" "make tools-kube"
  stamp kube-coredns "$want_coredns"
fi

if ! part_ok kube-local-path "$want_lpp" local-path-provisioner; then
  pin_check local-path-provisioner github.com/rancher/local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION"
  say "building local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION (the lab's StorageClass; go install)..."
  (cd tools/local-path-provisioner && GOBIN="$bin" go install -trimpath -ldflags "-s -w" \
    github.com/rancher/local-path-provisioner) || fail "local-path-provisioner: go install" "make tools-kube"
  stamp kube-local-path "$want_lpp"
fi

if ! part_ok kube-pause "$want_pause" pause; then
  # The pod sandbox's process, from the same Kubernetes module as the kubelet.
  src=$(cd tools/kubernetes && go list -m -f '{{.Dir}}' k8s.io/kubernetes) ||
    fail "pause: locate k8s.io/kubernetes" "make tools-kube"
  command -v gcc >/dev/null || fail "pause: gcc" "sudo apt-get install -y gcc libc6-dev"
  gcc -Os -static -DVERSION="v$KUBE_TOOLS_VERSION-zt-lab" -o "$bin/pause" "$src/build/pause/linux/pause.c" ||
    fail "pause: gcc" "sudo apt-get install -y gcc libc6-dev && make tools-kube"
  stamp kube-pause "$want_pause"
fi

all_ok || fail "kubernetes: final check" "make tools-kube"
say "Kubernetes tools installed in .tools/bin ($((SECONDS - started)) s)"
finish tools-kube "Kubernetes tools"
