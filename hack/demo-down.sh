#!/usr/bin/env bash
# Stops the demo's operator and the local control plane.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="${LLMDEPLOY_DEMO_DIR:-$HOME/.cache/llmdeploy-demo}"
if [[ -f "$state/operator.pid" ]]; then
  kill "$(cat "$state/operator.pid")" 2>/dev/null || true
  rm -f "$state/operator.pid"
fi
"$root/hack/testenv/down.sh"
