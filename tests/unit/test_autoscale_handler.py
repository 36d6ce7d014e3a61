"""The autoscaling handler's serialization, with a fake decision that detects overlap."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from llmdeploy.api.types import LLMDeployment
from llmdeploy.autoscale.decision import Decision, decide
from llmdeploy.catalog import Catalog
from llmdeploy.cluster.kube import Owner
from llmdeploy.controller import handlers
from llmdeploy.controller.service import Desired
from llmdeploy.controller.settings import OperatorSettings
from llmdeploy.sizing import plan_deployment

ROOT = Path(__file__).resolve().parents[2]


def resource() -> LLMDeployment:
    body = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["spec"]["scaling"] = {"metrics": [{"type": "runningRequests", "target": 4}]}
    return LLMDeployment.model_validate(body)


class OverlapDetector:
    """Wraps the decision; counts how many runs are inside it at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.guard = threading.Lock()

    def __call__(self, *args: Any) -> Decision:
        with self.guard:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.05)  # long enough for an unserialized second run to arrive
        with self.guard:
            self.inside -= 1
        return decide(*args)


def run_concurrently(catalog: Catalog, owners: list[Owner], detector: OverlapDetector) -> int:
    ctx = handlers.Context(OperatorSettings(), catalog, None, None)  # type: ignore[arg-type]
    res = resource()
    desired = Desired(plan_deployment(res.spec, catalog), "key")

    def run(owner: Owner) -> None:
        update: dict[str, Any] = {"conditions": []}
        body = kopf.Body({"metadata": {"name": owner.name, "resourceVersion": "1"}})
        handlers._autoscale(ctx, body, owner, res, desired, 1, {}, update, datetime.now(UTC), 1)

    threads = [threading.Thread(target=run, args=(o,)) for o in owners for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ctx.autoscale_locks) == 0  # no lock outlives its last holder
    return detector.most


def test_one_object_is_decided_by_one_run_at_a_time(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = OverlapDetector()
    monkeypatch.setattr(handlers, "decide", detector)
    assert run_concurrently(catalog, [Owner("a", "ns", "uid-a")], detector) == 1


def test_different_objects_are_decided_in_parallel(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = OverlapDetector()
    monkeypatch.setattr(handlers, "decide", detector)
    owners = [Owner("a", "ns", "uid-a"), Owner("b", "ns", "uid-b")]
    assert run_concurrently(catalog, owners, detector) == 2
