#!/usr/bin/env bash
# Regenerates the checked-in wrapper Go modules from versions.env.
# Run only when bumping a version; the build uses the committed go.mod/go.sum.
#
# k8s.io/kubernetes cannot be built as a dependency as-is: its go.mod replaces every
# k8s.io/* staging module with ./staging/...; the wrapper module maps each of them to the
# published module of the same release instead. The list is read from the release's go.mod.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
export GOFLAGS=-mod=mod

staging_minor="v0.${KUBE_VERSION#v1.}"
kube_mod="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"

dir="$here/modules/kubernetes"
mkdir -p "$dir"
{
  echo "module llmdeploy.io/testenv/kubernetes"
  echo
  echo "go 1.25.0"
  echo
  echo "replace ("
  awk '/=> \.\/staging\// {print "\t" $1 " => " $1 " '"$staging_minor"'"}' "$kube_mod"
  echo ")"
} > "$dir/go.mod"
# An explicit version on every tool: a bare `go get -tool` would upgrade to the newest release.
(cd "$dir" && go get -tool \
    "k8s.io/kubernetes/cmd/kube-apiserver@${KUBE_VERSION}" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@${KUBE_VERSION}" \
    "k8s.io/kubernetes/cmd/kube-scheduler@${KUBE_VERSION}" \
  && go mod tidy)

dir="$here/modules/etcd"
mkdir -p "$dir"
printf 'module llmdeploy.io/testenv/etcd\n\ngo 1.25.0\n' > "$dir/go.mod"
(cd "$dir" && go get -tool "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" && go mod tidy)

dir="$here/modules/kwok"
mkdir -p "$dir"
printf 'module llmdeploy.io/testenv/kwok\n\ngo 1.26.0\n' > "$dir/go.mod"
(cd "$dir" && go get -tool "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" && go mod tidy)
