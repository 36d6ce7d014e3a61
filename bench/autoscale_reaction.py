"""Reaction time from a load step to the scale write, on the local control plane with a real
Prometheus (scrape every 1 s) and the operator (status interval 2 s).

Run: .venv/bin/python bench/autoscale_reaction.py [--steps N]   (starts hack/testenv if needed)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.operator_harness import Operator, install, kubectl  # noqa: E402
from tests.e2e.prometheus_harness import Prometheus, VllmMetricsSim  # noqa: E402

NAMESPACE = "bench-autoscale"
NAME = "reaction"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    up = subprocess.run(
        [str(ROOT / "hack/testenv/up.sh")], stdout=subprocess.PIPE, text=True, check=True
    )
    kubeconfig = Path(up.stdout.strip().splitlines()[-1])
    install(kubeconfig)
    api = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
    kubectl(kubeconfig, "create", "namespace", NAMESPACE)
    sim = VllmMetricsSim()
    prometheus = Prometheus(sim.port, {"namespace": NAMESPACE, "llmdeploy_io_deployment": NAME})
    prometheus.start()
    operator = Operator(kubeconfig, Path(tempfile.mkdtemp()), LLMDEPLOY_STANDALONE="true")
    operator.start()
    body = yaml.safe_load((ROOT / "examples/llama-3.1-8b-l4.yaml").read_text())
    body["metadata"]["name"] = NAME
    body["spec"]["placement"]["tolerations"] = [
        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
    ]
    body["spec"]["workload"].pop("requestsPerSecond")
    body["spec"]["replicas"] = 1
    body["spec"]["scaling"] = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "prometheusUrl": prometheus.url,
        "metrics": [{"type": "runningRequests", "target": 4}],
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 1}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 1}],
            },
        },
    }
    kubectl(kubeconfig, "-n", NAMESPACE, "apply", "-f", "-", stdin=yaml.safe_dump(body))

    def replicas() -> int:
        obj = api.get_namespaced_custom_object(
            "llmdeploy.io", "v1alpha1", NAMESPACE, "llmdeployments", NAME
        )
        return int(obj["spec"].get("replicas") or 0)

    try:
        time.sleep(10)  # Prometheus discovers its target, the operator plans and applies
        samples = []
        for step in range(args.steps):
            want = 3 if step % 2 == 0 else 1
            sim.set_load(running=12 if want == 3 else 0, waiting=0)
            start = time.monotonic()
            while replicas() != want:
                if time.monotonic() - start > 120:
                    raise SystemExit(f"no scale to {want} within 120 s")
                time.sleep(0.1)
            samples.append(time.monotonic() - start)
            time.sleep(3)
        print(
            f"load step -> scale write: median {statistics.median(samples):.1f} s, "
            f"max {max(samples):.1f} s over {len(samples)} steps "
            f"({', '.join(f'{s:.1f}' for s in samples)})"
        )
    finally:
        operator.stop()
        prometheus.close()
        sim.close()
        kubectl(kubeconfig, "delete", "namespace", NAMESPACE, "--wait=false")


if __name__ == "__main__":
    main()
