#!/usr/bin/env bash
# Prints the path of a helm binary of HELM_VERSION (hack/helm/versions.env), built from the Go
# module proxy into ~/.cache/llmdeploy-helm/<version>/ on first use and reused after that.
#   hack/helm.sh            build if missing, print the path
#   hack/helm.sh -- ARGS    build if missing, then run helm ARGS
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=helm/versions.env
source "$here/helm/versions.env"

cache_root="${LLMDEPLOY_HELM_CACHE:-$HOME/.cache/llmdeploy-helm}"
bin="$cache_root/$HELM_VERSION/helm"
log() { echo "[helm build] $*" >&2; }

if [[ ! -x "$bin" ]]; then
  command -v go >/dev/null 2>&1 || { log "error: 'go' is not on PATH; install Go >= 1.25 to build helm"; exit 1; }
  mkdir -p "$(dirname "$bin")"
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  start=$SECONDS
  log "building helm $HELM_VERSION into $bin with $(go version)"
  if ! (cd "$here/helm/module" && go mod download >&2); then
    log "error: cannot download Go modules; is the Go module proxy (GOPROXY=$(go env GOPROXY)) reachable?"
    exit 1
  fi
  # helm prints this version (`helm version`); without it, it says only its minor release.
  ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
  ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
  (cd "$here/helm/module" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" helm.sh/helm/v4/cmd/helm)
  mv "$bin.tmp" "$bin"
  log "done in $((SECONDS - start))s"
fi

if [[ "${1:-}" == "--" ]]; then
  shift
  exec "$bin" "$@"
fi
echo "$bin"
