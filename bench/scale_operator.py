"""Operator at scale on the local control plane: N LLMDeployments across namespaces.

Measures time until all are planned and applied (status observed, phase Ready with 0 replicas),
reconciles per second, API-server requests per LLMDeployment, the operator's peak RSS, and its
CPU use once everything has settled.
Run: .venv/bin/python bench/scale_operator.py [--count 1000] [--namespaces 10]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.operator_harness import (  # noqa: E402
    Operator,
    install,
    kubectl,
    service_account_kubeconfig,
)
from tests.e2e.testenv_control import AuditLog  # noqa: E402

PAGE = 5000


def api_requests(kubeconfig: Path) -> float:
    raw = kubectl(kubeconfig, "get", "--raw", "/metrics").stdout
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^apiserver_request_total\{[^}]*\} ([0-9.e+]+)$", raw, re.M)
    )


def proc_stat(pid: int) -> tuple[float, float]:
    """(peak RSS MB, CPU seconds) of a process and its children's threads."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = 100.0
    return hwm, (int(fields[11]) + int(fields[12])) / ticks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=30)
    args = parser.parse_args()
    up = subprocess.run(
        [str(ROOT / "hack/testenv/up.sh")], stdout=subprocess.PIPE, text=True, check=True
    )
    kubeconfig = Path(up.stdout.strip().splitlines()[-1])
    install(kubeconfig)
    custom = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
    run = int(time.time()) % 100000
    namespaces = [f"bench-scale-{run}-{i}" for i in range(args.namespaces)]
    for ns in namespaces:
        kubectl(kubeconfig, "create", "namespace", ns)
    documents = []
    for i in range(args.count):
        documents.append(
            {
                "apiVersion": "llmdeploy.io/v1alpha1",
                "kind": "LLMDeployment",
                "metadata": {"name": f"m{i}", "namespace": namespaces[i % len(namespaces)]},
                "spec": {
                    "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
                    "replicas": 0,
                    "workload": {"maxContextLength": 4096 + 16 * (i % 64)},
                },
            }
        )
    # Create everything first, then start the operator: this measures the operator's own
    # throughput (start-up included), not how fast this script creates objects.
    created = kubectl(
        kubeconfig, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(documents)
    )
    assert created.returncode == 0, created.stderr
    workdir = Path(tempfile.mkdtemp())
    api = config.new_client_from_config(str(kubeconfig))
    operator = Operator(
        service_account_kubeconfig(api, kubeconfig, workdir / "operator.kubeconfig"),
        workdir,
        LLMDEPLOY_STANDALONE="true",
        LLMDEPLOY_STATUS_INTERVAL_SECONDS="300",
    )
    before = api_requests(kubeconfig)
    audit = AuditLog()
    audit.mark()
    start = time.monotonic()
    operator.start()
    assert operator.process is not None

    def settled() -> int:
        items = custom.list_cluster_custom_object(
            "llmdeploy.io", "v1alpha1", "llmdeployments", limit=PAGE
        )["items"]
        return sum(
            1
            for o in items
            if o["metadata"]["namespace"] in namespaces
            and (o.get("status") or {}).get("phase") == "Ready"
            and o["status"].get("observedGeneration") == o["metadata"]["generation"]
        )

    done = 0
    while done < args.count:
        time.sleep(2)
        done = settled()
        if time.monotonic() - start > 3600:
            raise SystemExit(f"only {done}/{args.count} settled after an hour")
    elapsed = time.monotonic() - start
    requests = api_requests(kubeconfig) - before
    own = Counter(
        f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}"
        for r in audit.requests()
    )
    rss, cpu_before = proc_stat(operator.process.pid)
    time.sleep(args.idle_seconds)
    rss, cpu_after = proc_stat(operator.process.pid)
    idle_cpu = (cpu_after - cpu_before) / args.idle_seconds
    operator.stop()
    (Path(tempfile.gettempdir()) / "llmdeploy-scale-operator.log").write_text(operator.logs())
    for ns in namespaces:
        kubectl(kubeconfig, "delete", "namespace", ns, "--wait=false")
    print(
        f"{args.count} LLMDeployments in {args.namespaces} namespaces, created before the "
        "operator started"
    )
    print(
        f"all planned, applied and Ready after {elapsed:.1f} s: "
        f"{args.count / elapsed:.1f} reconciles/s"
    )
    print(
        f"API requests during the run: {requests:.0f} ({requests / args.count:.1f} per "
        f"LLMDeployment, all clients: controller-manager, this script's polling)"
    )
    print(
        f"the operator's own requests (audit log): {own.total()} "
        f"({own.total() / args.count:.1f} per LLMDeployment):"
    )
    for what, n in own.most_common(12):
        print(f"  {n:7d} {what} ({n / args.count:.2f} per LLMDeployment)")
    print(
        f"operator peak RSS {rss:.0f} MB; idle CPU over {args.idle_seconds:.0f} s after "
        f"settling: {100 * idle_cpu:.1f}% of one core"
    )


if __name__ == "__main__":
    main()
