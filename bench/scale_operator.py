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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.operator_harness import (  # noqa: E402
    Operator,
    install,
    kubectl,
    service_account_kubeconfig,
)
from tests.e2e.testenv_control import AuditLog  # noqa: E402

from llmdeploy.api.types import LLMDeployment  # noqa: E402
from llmdeploy.catalog import load_catalog, load_image_lock  # noqa: E402
from llmdeploy.cluster.kube import Cluster  # noqa: E402
from llmdeploy.cluster.objects import Owner, prepared  # noqa: E402
from llmdeploy.controller.planning import desired_state  # noqa: E402
from llmdeploy.sizing.inventory import Inventory  # noqa: E402


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


def _is_settled(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(
        status.get("phase") == "Ready"
        and status.get("observedGeneration") == obj["metadata"]["generation"]
    )


def wait_until_settled(
    custom: client.CustomObjectsApi, namespaces: set[str], count: int, deadline: float
) -> None:
    """Follow the LLMDeployments with one watch instead of polling: a full list of 1,000
    objects with their plans every few seconds made this script a large share of the API
    server's work, which is the operator's bottleneck too."""
    settled: set[tuple[str, str]] = set()
    version = None
    while len(settled) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(settled)}/{count} settled after an hour")
        if version is None:  # start, or the watch expired (410): list once more
            listed = custom.list_cluster_custom_object("llmdeploy.io", "v1alpha1", "llmdeployments")
            version = listed["metadata"]["resourceVersion"]
            settled = {
                (o["metadata"]["namespace"], o["metadata"]["name"])
                for o in listed["items"]
                if o["metadata"]["namespace"] in namespaces and _is_settled(o)
            }
            continue
        stream = watch.Watch()
        try:
            for event in stream.stream(
                custom.list_cluster_custom_object,
                "llmdeploy.io",
                "v1alpha1",
                "llmdeployments",
                resource_version=version,
                timeout_seconds=30,
            ):
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                if key[0] not in namespaces:
                    continue
                if event["type"] != "DELETED" and _is_settled(obj):
                    settled.add(key)
                else:
                    settled.discard(key)
                if len(settled) >= count:
                    stream.stop()
        except client.ApiException as exc:
            if exc.status != 410:
                raise
            version = None


def apply_children_directly(
    kubeconfig: Path, operator_kubeconfig: Path, namespaces: set[str], workers: int
) -> float:
    """The control plane's ceiling for this load: the children the operator would apply
    (rendered beforehand, so none of this script's CPU is timed), applied by `workers` threads
    through the operator's own apply code, until the controller-manager has seen every
    Deployment. No kopf, no status, no events. Returns the seconds it took."""
    custom = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
    catalog, lock = load_catalog(), load_image_lock()
    work = []
    for item in custom.list_cluster_custom_object("llmdeploy.io", "v1alpha1", "llmdeployments")[
        "items"
    ]:
        meta = item["metadata"]
        if meta["namespace"] not in namespaces:
            continue
        resource = LLMDeployment.model_validate(item)
        desired = desired_state(resource, catalog, lock, Inventory(()), None)
        owner = Owner(meta["name"], meta["namespace"], meta["uid"])
        work.extend((prepared(obj, owner)[0], owner) for obj in desired.objects)
    cluster = Cluster(config.new_client_from_config(str(operator_kubeconfig)))
    apps = client.AppsV1Api(config.new_client_from_config(str(kubeconfig)))
    expected = sum(1 for obj, _ in work if obj["kind"] == "Deployment")
    start = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda job: cluster.apply(*job, take_over=False), work))
    while True:
        observed = sum(
            1
            for d in apps.list_deployment_for_all_namespaces().items
            if d.metadata.namespace in namespaces
            and (d.status.observed_generation or 0) >= d.metadata.generation
        )
        if observed >= expected:
            return time.monotonic() - start
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--control-plane-only",
        action="store_true",
        help="no operator: apply the children directly, to measure the control plane's ceiling",
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="threads, --control-plane-only")
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument(
        "--interval",
        type=float,
        default=15,
        help="seconds between the operator's periodic passes (manifests/ ship 15)",
    )
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
        LLMDEPLOY_STATUS_INTERVAL_SECONDS=str(args.interval),
    )
    if args.control_plane_only:
        took = apply_children_directly(
            kubeconfig, operator.kubeconfig, set(namespaces), workers=args.workers
        )
        print(
            f"control plane only: the children of {args.count} LLMDeployments applied and "
            f"observed in {took:.1f} s: {args.count / took:.1f} per second"
        )
        for ns in namespaces:
            kubectl(kubeconfig, "delete", "namespace", ns, "--wait=false")
        return
    before = api_requests(kubeconfig)
    audit = AuditLog()
    audit.mark()
    start = time.monotonic()
    operator.start()
    assert operator.process is not None

    wait_until_settled(custom, set(namespaces), args.count, start + 3600)
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
        f"LLMDeployment, all clients: operator, controller-manager, this script's watch)"
    )
    print(
        f"the operator's own requests (audit log): {own.total()} "
        f"({own.total() / args.count:.1f} per LLMDeployment):"
    )
    for what, n in own.most_common(12):
        print(f"  {n:7d} {what} ({n / args.count:.2f} per LLMDeployment)")
    print(
        f"operator peak RSS {rss:.0f} MB; idle CPU over {args.idle_seconds:.0f} s after "
        f"settling, periodic pass every {args.interval:g} s: {100 * idle_cpu:.1f}% of one core"
    )


if __name__ == "__main__":
    main()
