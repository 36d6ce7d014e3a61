"""Helpers shared by the end-to-end tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")

# Tolerations a pod needs to land on the simulated GPU nodes of hack/testenv/nodes.yaml.
KWOK_TOLERATION: dict[str, str] = {
    "key": "kwok.x-k8s.io/node",
    "operator": "Exists",
    "effect": "NoSchedule",
}
GPU_TOLERATION: dict[str, str] = {
    "key": "nvidia.com/gpu",
    "operator": "Exists",
    "effect": "NoSchedule",
}


def wait_until(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 60.0,
    interval: float = 0.25,
) -> T:
    """Calls ``probe`` until it returns something truthy and returns that value.

    Raises AssertionError naming ``what`` (and the last value seen) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


def applied(logs: str, kind: str) -> bool:
    """Whether an operator's log says it applied an object of `kind` (its "applied" line lists
    the changed children, in the order the render gives them)."""
    return any(": applied " in line and f"{kind}/" in line for line in logs.splitlines())


def healthy(port: int) -> bool:
    """Whether an operator's /healthz on `port` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def status_of(call: Callable[[], object]) -> int:
    """Runs an API call and returns its HTTP status: 200 on success, else the error status."""
    try:
        call()
    except ApiException as exc:
        return int(exc.status or 0)
    return 200


def gpu_pod(name: str, gpus: int, node_selector: dict[str, str] | None = None) -> client.V1Pod:
    gpu = {"nvidia.com/gpu": str(gpus)}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="server",
                    image="registry.invalid/llm-server:test",
                    resources=client.V1ResourceRequirements(requests=gpu, limits=gpu),
                )
            ],
            node_selector=node_selector,
            tolerations=[
                client.V1Toleration(**KWOK_TOLERATION),
                client.V1Toleration(**GPU_TOLERATION),
            ],
        ),
    )


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free on every interface, never handed out before in this run. A probe's port is
    free again once the probe closes, so two calls before either is bound could return the same
    one: an operator given it for both its metrics and its health server served /healthz from
    the metrics server and died binding the second (test_failover, 2026-12-07)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
