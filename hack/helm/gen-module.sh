#!/usr/bin/env bash
# Regenerates hack/helm/module/go.mod and go.sum from versions.env. Run only when bumping
# HELM_VERSION; builds use the committed files.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
export GOFLAGS=-mod=mod
dir="$here/module"
mkdir -p "$dir"
printf 'module llmdeploy.io/tools/helm\n\ngo 1.25.0\n' > "$dir/go.mod"
rm -f "$dir/go.sum"
# An explicit version: a bare `go get -tool` would take the newest release.
(cd "$dir" && go get -tool "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}" && go mod tidy)
