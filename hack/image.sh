#!/usr/bin/env bash
# Builds the operator image from the Dockerfile with docker or podman, whichever has a running
# engine, and says how to pin it by digest. It pushes nothing: a pinnable digest is the one a
# registry reports for the pushed manifest, which a local build does not have.
#   IMAGE=<registry>/llmdeploy:<tag> hack/image.sh      (default IMAGE: llmdeploy:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
image="${IMAGE:-llmdeploy:dev}"
log() { echo "[image] $*" >&2; }

engine=""
for candidate in docker podman; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
    engine="$candidate"
    break
  fi
done
if [[ -z "$engine" ]]; then
  log "error: no container engine is running here (docker or podman: the client alone cannot"
  log "build). Build the image where one runs: docker build -t <registry>/llmdeploy:<tag> ."
  exit 1
fi

log "building $image with $engine"
"$engine" build -t "$image" .
log "built $image, local image id $("$engine" image inspect --format '{{.Id}}' "$image")"
log "the image id is not the digest to pin. Push the image, then read the registry's digest:"
log "  $engine push $image"
log "  $engine image inspect --format '{{index .RepoDigests 0}}' $image"
log "and set it: kustomize edit set image llmdeploy=<registry>/llmdeploy@sha256:<digest>"
log "        or: helm ... --set image.repository=<registry>/llmdeploy --set image.digest=sha256:<digest>"
