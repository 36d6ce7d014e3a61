#!/usr/bin/env bash
# Runs two Kubernetes manifest linters, checkov and kube-score, on every rendered example
# (`llmdeploy render -f examples/<x>.yaml`) and on the install (`kubectl kustomize manifests/`),
# and prints their findings. NOT part of `make test`: the linters are downloaded on first use,
# and their findings are judged by a person, not asserted; what each remaining one means is in
# docs/reliability.md ("Manifest linters"). Run it with `make lint-manifests`.
#
# The linters are installed at the versions pinned below into
# ~/.cache/llmdeploy-lint/checkov-<version>_kube-score-<version>/ and reused from there:
# checkov with pip into a venv of its own, kube-score with `go install` (Go module proxy).
# Exit status: 0 when both linters ran, whatever they found; 1 when something could not run.
set -euo pipefail

CHECKOV_VERSION=3.3.30
KUBE_SCORE_VERSION=v1.20.0

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LLMDEPLOY_LINT_CACHE:-$HOME/.cache/llmdeploy-lint}/checkov-${CHECKOV_VERSION}_kube-score-${KUBE_SCORE_VERSION}"
llmdeploy="${LLMDEPLOY:-$root/.venv/bin/llmdeploy}"
python="${PYTHON:-python3}"

log() { echo "[lint-manifests] $*" >&2; }
die() { log "error: $*"; exit 1; }

install_checkov() {
  [[ -f "$cache/checkov/.installed" ]] && return
  log "installing checkov $CHECKOV_VERSION into $cache/checkov"
  rm -rf "$cache/checkov"
  "$python" -m venv "$cache/checkov" || die "$python -m venv failed"
  "$cache/checkov/bin/pip" install --quiet "checkov==$CHECKOV_VERSION" >&2 ||
    die "pip could not install checkov $CHECKOV_VERSION"
  touch "$cache/checkov/.installed"  # a half-done install is redone next time
}

install_kube_score() {
  [[ -x "$cache/bin/kube-score" ]] && return
  command -v go >/dev/null 2>&1 || die "'go' is not on PATH; it builds kube-score"
  log "building kube-score $KUBE_SCORE_VERSION into $cache/bin"
  GOBIN="$cache/bin" go install "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION" >&2 ||
    die "go install of kube-score $KUBE_SCORE_VERSION failed"
}

[[ -x "$llmdeploy" ]] || die "$llmdeploy not found; run 'make venv' first"
command -v kubectl >/dev/null 2>&1 || die "'kubectl' is not on PATH; it renders manifests/"
install_checkov
install_kube_score

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for example in "$root"/examples/*.yaml; do
  "$llmdeploy" render -f "$example" >"$work/$(basename "$example")" ||
    die "llmdeploy render -f $example failed"
done
kubectl kustomize "$root/manifests" >"$work/install.yaml" || die "kubectl kustomize manifests/ failed"
log "linting $(cd "$work" && echo *.yaml)"

echo "== checkov $CHECKOV_VERSION (failed checks only)"
# --skip-download: no request to checkov's vendor platform (guidelines, policies); the
# package update check is off too. --soft-fail: exit 0 with findings, non-zero on an error.
CKV_SKIP_PACKAGE_UPDATE_CHECK=true "$cache/checkov/bin/checkov" --directory "$work" \
  --framework kubernetes --quiet --compact --skip-download --soft-fail ||
  die "checkov failed"

echo "== kube-score $KUBE_SCORE_VERSION (critical and warning only)"
set +e
scored="$("$cache/bin/kube-score" score --output-format ci "$work"/*.yaml)"
status=$?
set -e
findings="$(grep -E '^\[(CRITICAL|WARNING)\]' <<<"$scored" || true)"
# kube-score exits 1 for findings and for errors alike: only findings explain a 1.
if ((status != 0)) && [[ -z "$findings" ]]; then
  die "kube-score failed (exit $status)"
fi
[[ -n "$findings" ]] && printf '%s\n' "$findings"
echo "kube-score: $(grep -c . <<<"$findings" || true) findings"
