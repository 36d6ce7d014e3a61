#!/usr/bin/env bash
# make demo: local simulated GPU cluster + CRD/RBAC + the operator + an example LLMDeployment.
# Stop everything with `make demo-down`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
state="${LLMDEPLOY_DEMO_DIR:-$HOME/.cache/llmdeploy-demo}"
mkdir -p "$state"
namespace=llmdeploy-demo
example="${LLMDEPLOY_DEMO_EXAMPLE:-examples/llama-3.1-8b-l4.yaml}"

kubeconfig="$(hack/testenv/up.sh | tail -1)"
export KUBECONFIG="$kubeconfig"
echo "== cluster: $KUBECONFIG"
kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count

echo "== installing the CRDs and RBAC from manifests/ (the operator runs locally)"
kubectl kustomize manifests \
  | .venv/bin/python -c 'import sys, yaml; docs = [d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] != "Deployment"]; print(yaml.safe_dump_all(docs))' \
  | kubectl apply --server-side --force-conflicts -f - >/dev/null
# kopf's shared peering CRDs: created where absent, an existing copy left alone (README.md).
if ! out="$(kubectl create -k manifests/kopf-peering-crds 2>&1)"; then
  if grep -v -e AlreadyExists -e ' created$' <<<"$out" | grep -q .; then echo "$out" >&2; exit 1; fi
fi
kubectl wait --for=condition=Established crd/llmdeployments.llmdeploy.io \
  crd/clusterkopfpeerings.kopf.dev --timeout=60s >/dev/null

if [[ -f "$state/operator.pid" ]] && kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; then
  echo "== operator already running (pid $(cat "$state/operator.pid"))"
else
  echo "== starting the operator (log: $state/operator.log)"
  LLMDEPLOY_STATUS_INTERVAL_SECONDS=3 LLMDEPLOY_HEALTH_PORT=0 LLMDEPLOY_METRICS_PORT=0 \
    setsid .venv/bin/llmdeploy run >"$state/operator.log" 2>&1 &
  echo $! >"$state/operator.pid"
fi

echo "== applying $example to namespace $namespace (with the simulated nodes' toleration)"
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
.venv/bin/python - "$example" <<'PY' | kubectl -n "$namespace" apply -f -
import sys, yaml
body = yaml.safe_load(open(sys.argv[1]))
placement = body["spec"].setdefault("placement", {})
placement["tolerations"] = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
print(yaml.safe_dump(body))
PY
name="$(.venv/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["name"])' "$example")"
kubectl -n "$namespace" wait "llmdeployment/$name" --for=jsonpath='{.status.phase}'=Ready --timeout=180s >/dev/null

echo
echo "== the plan behind it (status.plan of llmdeployment/$name, as the operator made it)"
kubectl -n "$namespace" get "llmdeployment/$name" -o json | .venv/bin/python -c '
import json, sys
from llmdeploy.cli import format_plan_table
from llmdeploy.sizing import Plan
print(format_plan_table(Plan.model_validate(json.load(sys.stdin)["status"]["plan"])), end="")'
echo "   offline, the same plan: kubectl get nodes -o yaml | llmdeploy plan -f $example --inventory -"
echo
echo "== kubectl get pods (scheduled by the real scheduler onto simulated GPU nodes)"
kubectl -n "$namespace" get pods -o wide
echo
echo "== kubectl get llmdeployments"
kubectl -n "$namespace" get llmdeployments -o wide
echo
echo "export KUBECONFIG=$KUBECONFIG   # to look around; make demo-down stops everything"
