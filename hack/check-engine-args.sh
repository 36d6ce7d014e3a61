#!/usr/bin/env bash
# Parses every `vllm serve` command line llmdeploy renders (the examples, and specs that force
# each option the renderer can emit) with the argument parser of each vLLM release the image
# lock pins, and builds that release's AsyncEngineArgs from it (hack/engine-args/).
#
# Heavy, and not part of `make test`: each release is installed with its dependencies (torch
# included, several GB) into a virtual environment under
# ${LLMDEPLOY_ENGINE_ARGS_CACHE:-~/.cache/llmdeploy-engine-args}/vllm-<version>, one at a time;
# the environment is removed after its check unless KEEP=1 (then a later run reuses it).
#   hack/check-engine-args.sh              # every pinned release
#   hack/check-engine-args.sh 0.11.0 0.24.0
# Exit 1 if any command line is refused or a release cannot be installed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cache="${LLMDEPLOY_ENGINE_ARGS_CACHE:-$HOME/.cache/llmdeploy-engine-args}"
python="${PYTHON:-python3}"
mkdir -p "$cache"
[[ -x .venv/bin/python ]] || make venv >/dev/null
if (($#)); then versions=("$@"); else mapfile -t versions < <(.venv/bin/python hack/engine-args/cases.py versions); fi

status=0
for version in "${versions[@]}"; do
  cases="$(mktemp)"
  .venv/bin/python hack/engine-args/cases.py cases "$version" >"$cases"
  venv="$cache/vllm-$version"
  if ! "$venv/bin/python" -c "import vllm" 2>/dev/null; then
    echo "== installing vllm==$version into $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --no-cache-dir "vllm==$version" >"$venv.install.log" 2>&1; then
      echo "FAIL vllm $version: cannot be installed here (log: $venv.install.log)"
      status=1
      rm -rf "$venv" "$cases"
      continue
    fi
  fi
  echo "== vllm $version" >&2
  # Outside the repository: the release's own modules, nothing of llmdeploy's.
  .venv/bin/python hack/engine-args/cases.py skipped "$cases" | sed "s/^SKIP /SKIP vllm $version /"
  mapfile -t gpus < <(.venv/bin/python hack/engine-args/cases.py gpus "$cases")
  for gpu in "${gpus[@]}"; do
    (cd "$cache" && "$venv/bin/python" "$root/hack/engine-args/vllm_parse.py" "$gpu" <"$cases") || status=1
  done
  rm -f "$cases"
  if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$venv"; fi
done
exit "$status"
