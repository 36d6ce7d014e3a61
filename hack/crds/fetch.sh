#!/usr/bin/env bash
# Fetches the CRDs of the third-party kinds llmdeploy renders or ships (KEDA ScaledObject,
# PodMonitor, LeaderWorkerSet, PrometheusRule, InferencePool, HTTPRoute of the standard
# channel) from the Go module proxy at the versions in
# versions.env, checks each file against hack/crds/sha256sums, and prints the directory holding
# them on stdout.
# The files are upstream content: they live in a cache outside the repo, never in git.
# A warm cache is only re-verified. `fetch.sh --record` rewrites sha256sums from what it
# fetched (after a version bump; review the diff).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
sums="$here/sha256sums"
record=false
case "${1:-}" in
  --record) record=true ;;
  "") ;;
  *) echo "usage: $0 [--record]" >&2; exit 2 ;;
esac

cache_root="${LLMDEPLOY_CRDS_CACHE:-$HOME/.cache/llmdeploy-crds}"
dir="$cache_root/keda-${KEDA_VERSION}_lws-${LWS_VERSION}_prometheus-operator-${PROMETHEUS_OPERATOR_VERSION}_gie-${GATEWAY_API_INFERENCE_EXTENSION_VERSION}_gateway-api-${GATEWAY_API_VERSION}"
# "module version path-in-module": the smallest module of each project that ships the CRD.
crds=(
  "github.com/kedacore/keda/v2 $KEDA_VERSION config/crd/bases/keda.sh_scaledobjects.yaml"
  "sigs.k8s.io/lws $LWS_VERSION config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml"
  "github.com/prometheus-operator/prometheus-operator $PROMETHEUS_OPERATOR_VERSION example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml"
  "github.com/prometheus-operator/prometheus-operator $PROMETHEUS_OPERATOR_VERSION example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"
  "sigs.k8s.io/gateway-api-inference-extension $GATEWAY_API_INFERENCE_EXTENSION_VERSION config/crd/bases/inference.networking.k8s.io_inferencepools.yaml"
  "sigs.k8s.io/gateway-api $GATEWAY_API_VERSION config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"
)

log() { echo "[crds] $*" >&2; }
die() { log "error: $*"; exit 1; }

# verify <dir>: true if every CRD file in <dir> has the sum recorded for its
# module@version/path; a missing record is an error.
verify() {
  local entry module version path key want got
  for entry in "${crds[@]}"; do
    read -r module version path <<<"$entry"
    key="$module@$version/$path"
    want="$(awk -v k="$key" '$2 == k { print $1 }' "$sums" 2>/dev/null || true)"
    [[ -n "$want" ]] || die "no sha256 recorded for $key in $sums; run $0 --record"
    [[ -f "$1/$(basename "$path")" ]] || return 1
    got="$(sha256sum "$1/$(basename "$path")" | cut -d' ' -f1)"
    if [[ "$got" != "$want" ]]; then
      log "$key: sha256 $got, expected $want"
      return 1
    fi
  done
}

if ! $record && verify "$dir"; then
  echo "$dir"
  exit 0
fi
# A cache that fails the check (absent, partial, altered) is fetched afresh.

command -v go >/dev/null 2>&1 || die "'go' is not on PATH; it downloads the CRDs from the Go module proxy"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/crds"
: >"$work/sums"
for entry in "${crds[@]}"; do
  read -r module version path <<<"$entry"
  log "downloading $module@$version"
  # Run outside any module so that no go.mod or vendor directory is consulted.
  if ! info="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$module@$version")"; then
    die "cannot download $module@$version; is the Go module proxy (GOPROXY=$(go env GOPROXY)) reachable?"
  fi
  module_dir="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])' <<<"$info")"
  [[ -f "$module_dir/$path" ]] || die "$module@$version has no $path"
  # The module cache is read-only; install gives the copy a normal mode.
  install -m 0644 "$module_dir/$path" "$work/crds/$(basename "$path")"
  echo "$(sha256sum "$work/crds/$(basename "$path")" | cut -d' ' -f1)  $module@$version/$path" >>"$work/sums"
done

if $record; then
  cp "$work/sums" "$sums"
  log "recorded sums in $sums"
fi
verify "$work/crds" || die "the downloaded CRDs do not match $sums"
mkdir -p "$cache_root"
rm -rf "$dir"
mv "$work/crds" "$dir"
log "CRDs in $dir"
echo "$dir"
