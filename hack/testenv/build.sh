#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok from the Go
# module proxy into a cache keyed by version, and prints the bin directory on stdout.
# A warm cache returns at once; GOMODCACHE and GOCACHE are left in place for later builds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${LLMDEPLOY_TESTENV_CACHE:-$HOME/.cache/llmdeploy-testenv}"
bin="$cache_root/kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}/bin"
binaries=(etcd kwok kube-apiserver kube-controller-manager kube-scheduler)

log() { echo "[testenv build] $*" >&2; }

have_all() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if have_all; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "error: 'go' is not on PATH; install Go >= 1.25 to build the control plane"; exit 1; }
log "building into $bin with $(go version)"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

if ! (cd "$here/modules/etcd" && go mod download >&2); then
  log "error: cannot download Go modules; is the Go module proxy (GOPROXY=$(go env GOPROXY)) reachable?"
  exit 1
fi

build() {  # build <module dir> <package> <output name> [ldflags]
  local module="$1" pkg="$2" name="$3" ldflags="${4:-}"
  [[ -x "$bin/$name" ]] && { log "$name: cached"; return; }
  local start=$SECONDS
  log "$name: building $pkg ..."
  (cd "$here/modules/$module" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  log "$name: done in $((SECONDS - start))s"
}

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=${KUBE_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  kube_ldflags+=" -X $pkg.gitTreeState=clean"
done

build etcd go.etcd.io/etcd/server/v3 etcd
build kwok sigs.k8s.io/kwok/cmd/kwok kwok
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$kube_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$kube_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$kube_ldflags"
have_all
echo "$bin"
