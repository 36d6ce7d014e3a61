#!/usr/bin/env bash
# Builds one Go program of a checked-in module (its go.mod/go.sum pin every version) from the
# Go module proxy into <binary>, unless it is there already, and prints <binary>.
#   hack/go-build-cached.sh <module dir> <package> <binary> [extra ldflags]
set -euo pipefail
module="$1" package="$2" bin="$3" ldflags="-s -w ${4:-}"
name="$(basename "$bin")"
log() { echo "[$name build] $*" >&2; }

if [[ ! -x "$bin" ]]; then
  command -v go >/dev/null 2>&1 || { log "error: 'go' is not on PATH; install Go >= 1.25 to build $name"; exit 1; }
  mkdir -p "$(dirname "$bin")"
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  start=$SECONDS
  log "building $package into $bin with $(go version)"
  if ! (cd "$module" && go mod download >&2); then
    log "error: cannot download Go modules; is the Go module proxy (GOPROXY=$(go env GOPROXY)) reachable?"
    exit 1
  fi
  (cd "$module" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" "$package")
  mv "$bin.tmp" "$bin"
  log "done in $((SECONDS - start))s"
fi
echo "$bin"
