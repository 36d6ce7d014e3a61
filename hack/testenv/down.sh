#!/usr/bin/env bash
# Stops the local control plane started by up.sh (every recorded process and its process
# group) and removes its state dir. Idempotent: does nothing when nothing runs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

take_lock
stop_all
log "stopped"
