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
# helm prints this version (`helm version`); without it, it says only its minor release.
ldflags="-X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
bin="$("$here/go-build-cached.sh" "$here/helm/module" helm.sh/helm/v4/cmd/helm \
  "$cache_root/$HELM_VERSION/helm" "$ldflags")"

if [[ "${1:-}" == "--" ]]; then
  shift
  exec "$bin" "$@"
fi
echo "$bin"
