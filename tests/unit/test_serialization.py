"""One object is reconciled by one run at a time, whether kopf's change handler or the periodic
pass starts it (two autoscaling decisions from one reading would both scale); different objects
run in parallel. The reconcile is replaced by a fake that detects overlap."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import kopf
import pytest

from llmdeploy.catalog import Catalog
from llmdeploy.controller import handlers
from llmdeploy.controller.settings import OperatorSettings


class OverlapDetector:
    """Stands in for the reconcile; counts how many runs are inside it at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.guard = threading.Lock()

    def __call__(self, *args: Any) -> None:
        with self.guard:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.05)  # long enough for an unserialized second run to arrive
        with self.guard:
            self.inside -= 1


def body(uid: str) -> dict[str, Any]:
    return {"metadata": {"name": uid, "namespace": "ns", "uid": uid, "resourceVersion": "1"}}


def run_concurrently(catalog: Catalog, uids: list[str], detector: OverlapDetector) -> int:
    ctx = handlers.Context(OperatorSettings(), catalog, None, None)  # type: ignore[arg-type]
    for uid in uids:
        ctx.tracked.seen(body(uid))
    logger = logging.getLogger("test")

    def from_kopf(uid: str) -> None:
        handlers.reconcile_in_kopf(ctx, kopf.Body(body(uid)), kopf.Patch(), logger)  # type: ignore[arg-type]

    def from_pass(uid: str) -> None:
        handlers.reconcile_in_pass(ctx, body(uid))

    threads = [
        threading.Thread(target=run, args=(uid,))
        for uid in uids
        for run in (from_kopf, from_pass, from_kopf, from_pass)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ctx.locks) == 0  # no lock outlives its last holder
    return detector.most


def test_one_object_is_reconciled_by_one_run_at_a_time(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = OverlapDetector()
    monkeypatch.setattr(handlers, "reconcile", detector)
    assert run_concurrently(catalog, ["uid-a"], detector) == 1


def test_different_objects_are_reconciled_in_parallel(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = OverlapDetector()
    monkeypatch.setattr(handlers, "reconcile", detector)
    assert run_concurrently(catalog, ["uid-a", "uid-b"], detector) == 2


def test_the_pass_skips_an_object_deleted_on_its_way(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = OverlapDetector()
    monkeypatch.setattr(handlers, "reconcile", detector)
    ctx = handlers.Context(OperatorSettings(), catalog, None, None)  # type: ignore[arg-type]
    ctx.tracked.seen(body("uid-a"))
    ctx.tracked.gone("uid-a")
    handlers.reconcile_in_pass(ctx, body("uid-a"))
    assert detector.most == 0


def test_the_pass_leaves_a_spec_kopf_has_not_handled_to_kopf(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = OverlapDetector()
    monkeypatch.setattr(handlers, "reconcile", detector)
    ctx = handlers.Context(OperatorSettings(), catalog, None, None)  # type: ignore[arg-type]
    new = {**body("uid-a"), "status": {"observedGeneration": 1}}
    new["metadata"] = {**new["metadata"], "generation": 2}
    ctx.tracked.seen(new)
    handlers.reconcile_in_pass(ctx, new)
    assert detector.most == 0
    handled = {**new, "status": {"observedGeneration": 2}}
    handlers.reconcile_in_pass(ctx, new)  # the latest body the watch delivered counts
    assert detector.most == 0
    ctx.tracked.seen(handled)
    handlers.reconcile_in_pass(ctx, new)
    assert detector.most == 1
