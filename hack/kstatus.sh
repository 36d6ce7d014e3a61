#!/usr/bin/env bash
# Prints the path of kstatus-check (hack/kstatus/main.go: the kstatus library of
# sigs.k8s.io/cli-utils, as pinned in hack/kstatus/go.mod), built from the Go module proxy into
# ~/.cache/llmdeploy-kstatus/<cli-utils version>-<source hash>/ on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/kstatus"
version="$(awk '$1 == "sigs.k8s.io/cli-utils" {print $2}' "$src/go.mod")"
key="$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-12)"
cache_root="${LLMDEPLOY_KSTATUS_CACHE:-$HOME/.cache/llmdeploy-kstatus}"
exec "$here/go-build-cached.sh" "$src" . "$cache_root/$version-$key/kstatus-check"
