"""A reconcile that raises what the operator does not expect (a bug): a ReconcileError condition
and one Warning event per distinct failure, the retry's backoff, and the condition cleared by
the next reconcile that succeeds. The cluster is a stand-in that keeps one object and its
status the way the API server would (merge patches under a resourceVersion precondition)."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from llmdeploy.api.status import LLMDeploymentStatus, Observed
from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.cluster.objects import LiveChild, Owner, live_child
from llmdeploy.controller import reconciler as reconciler_module
from llmdeploy.controller.reconciler import Reconciler, status_patch, unexpected
from llmdeploy.controller.settings import OperatorSettings
from llmdeploy.controller.state import Outcome
from llmdeploy.sizing.inventory import Inventory
from tests.unit.conftest import L4_NODES, body

KEY = ("ns", "m")


class Cluster:
    """The one LLMDeployment `m` and what was written about it."""

    def __init__(self) -> None:
        self.body = body()
        self.patches: list[tuple[dict[str, Any], str]] = []
        self.events: list[tuple[str, str, bool]] = []
        self.live: dict[tuple[str, str], str] = {}  # objects already there: their controller
        self.applied: list[tuple[str, str, bool]] = []
        self.asked: list[tuple[str, str]] = []  # controller_of calls
        self.deleted: list[tuple[str, str]] = []

    def inventory(self) -> Inventory:
        return L4_NODES

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> str | None:
        self.patches.append((status, resource_version))
        metadata = self.body["metadata"]
        if resource_version != metadata["resourceVersion"]:
            return None
        self.body["status"] = merged(self.body["status"], status)
        metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)
        return str(metadata["resourceVersion"])

    def post_event(
        self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool
    ) -> None:
        self.events.append((reason, message, warning))

    def controller_of(self, obj: Mapping[str, Any], namespace: str) -> str | None:
        self.asked.append((obj["kind"], obj["metadata"]["name"]))
        return self.live.get((obj["kind"], obj["metadata"]["name"]))

    def apply(self, obj: dict[str, Any], owner: Owner, *, take_over: bool) -> LiveChild:
        self.applied.append((obj["kind"], obj["metadata"]["name"], take_over))
        metadata = {**obj["metadata"], "uid": f"uid-{obj['kind']}", "resourceVersion": "1"}
        return live_child(obj["kind"], {**obj, "metadata": metadata})

    def unschedulable_pods(self, owner: Owner, spec_hash: str | None) -> list[Any]:
        return []

    def delete_child(self, kind: str, name: str, namespace: str, uid: str) -> None:
        self.deleted.append((kind, name))


def merged(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) applied, as the API server does."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture
def reconciler(catalog: Catalog, cluster: Cluster) -> Reconciler:
    settings = OperatorSettings(standalone=True, workers=1, status_interval_seconds=3600)
    made = Reconciler(settings, catalog, load_image_lock(), cluster)  # type: ignore[arg-type]
    made.object_event("ADDED", copy.deepcopy(cluster.body))
    return made


def watched(reconciler: Reconciler, cluster: Cluster) -> None:
    """The watch brings the object as it now is."""
    reconciler.object_event("MODIFIED", copy.deepcopy(cluster.body))


def conditions(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in cluster.body["status"].get("conditions") or []}


def broken(message: str, error: type[Exception] = ZeroDivisionError) -> Any:
    def decide(*_: Any) -> Any:
        raise error(message)

    return decide


def test_a_bug_is_a_condition_and_one_event_then_cleared_by_a_success(
    reconciler: Reconciler, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert reconciler._reconcile_one(KEY)[0] == "success"  # planned and Ready=False (rolling)
    watched(reconciler, cluster)
    planned = conditions(cluster)["Planned"]
    cluster.patches.clear()
    cluster.events.clear()

    monkeypatch.setattr(reconciler_module, "decide", broken("token=hf_secret in the answer"))
    assert reconciler._reconcile_one(KEY)[0] == "exception"
    [(patch, version)] = cluster.patches
    assert version == "8"  # the precondition: the resourceVersion the reconcile read
    assert set(patch) == {"phase", "conditions"}  # nothing else the operator owns is touched
    found = conditions(cluster)
    assert found["Degraded"]["status"] == "True" and found["Degraded"]["reason"] == "ReconcileError"
    assert found["Ready"]["status"] == "False" and found["Ready"]["reason"] == "ReconcileError"
    assert found["Planned"] == planned and cluster.body["status"]["phase"] == "Degraded"
    [(reason, message, warning)] = cluster.events
    assert reason == "ReconcileError" and warning
    assert message == found["Degraded"]["message"]
    assert "ZeroDivisionError" in message and "hf_secret" not in message
    assert "test_reconciler.decide" not in message  # located in the operator's code only

    # Retries of the same failure write and post nothing more.
    watched(reconciler, cluster)
    for _ in range(3):
        assert reconciler._reconcile_one(KEY)[0] == "exception"
    assert len(cluster.patches) == 1 and len(cluster.events) == 1

    # Another failure is told once more.
    monkeypatch.setattr(reconciler_module, "decide", broken("missing", KeyError))
    assert reconciler._reconcile_one(KEY)[0] == "exception"
    assert [e[0] for e in cluster.events] == ["ReconcileError"] * 2
    assert "KeyError" in cluster.events[-1][1]
    watched(reconciler, cluster)

    monkeypatch.undo()
    assert reconciler._reconcile_one(KEY)[0] == "success"
    found = conditions(cluster)
    assert found["Degraded"]["status"] == "False" and found["Degraded"]["reason"] != (
        "ReconcileError"
    )
    assert found["Ready"]["reason"] != "ReconcileError"
    assert cluster.body["status"]["phase"] == "Progressing"


def test_an_overdue_reconcile_is_a_condition_and_one_event_then_cleared_by_a_success(
    reconciler: Reconciler, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconcile past its bound (here: before its first write) is told in status and once as
    an event, and cleared by the next one in time."""
    clock = [1000.0]
    monkeypatch.setattr(reconciler_module.time, "monotonic", lambda: clock[0])
    real_decide = reconciler_module.decide

    def slow_decide(snap: Any, config: Any) -> Any:
        clock[0] += reconciler.settings.reconcile_timeout_seconds + 1
        return real_decide(snap, config)

    monkeypatch.setattr(reconciler_module, "decide", slow_decide)
    for _ in range(2):
        assert reconciler._reconcile_one(KEY)[0] == "overdue"
        watched(reconciler, cluster)
    assert cluster.applied == []
    found = conditions(cluster)
    assert (found["Degraded"]["status"], found["Degraded"]["reason"]) == ("True", "ReconcileError")
    message = found["Degraded"]["message"]
    assert "ran past its bound (LLMDEPLOY_RECONCILE_TIMEOUT_SECONDS)" in message
    assert [(e[0], e[2]) for e in cluster.events] == [("ReconcileError", True)]

    monkeypatch.setattr(reconciler_module, "decide", real_decide)
    assert reconciler._reconcile_one(KEY)[0] == "success"
    assert conditions(cluster)["Degraded"]["status"] == "False"


def test_a_status_that_changed_meanwhile_is_not_overwritten_and_nothing_is_posted(
    reconciler: Reconciler, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.body["metadata"]["resourceVersion"] = "9"  # someone wrote after the watch's event
    monkeypatch.setattr(reconciler_module, "decide", broken("x"))
    assert reconciler._reconcile_one(KEY)[0] == "exception"
    assert [version for _, version in cluster.patches] == ["7"]
    assert cluster.body["status"] == {} and cluster.events == []


def test_a_bug_backs_off_like_any_failure(
    reconciler: Reconciler,
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(reconciler_module, "decide", broken("x"))
    caplog.set_level(logging.WARNING, "llmdeploy.reconcile")
    worker = threading.Thread(target=reconciler._work)
    reconciler.queue.add(KEY)
    worker.start()
    try:
        for _ in range(200):
            if "retry in" in caplog.text:
                break
            threading.Event().wait(0.05)
    finally:
        reconciler._stop.set()
        worker.join(timeout=5)
    assert "reconcile of ns/m failed; retry in 0.5s" in caplog.text
    assert "ZeroDivisionError" in caplog.text  # the log has the traceback


def test_the_message_names_the_class_and_the_operator_s_frame_never_the_text() -> None:
    from llmdeploy.controller import planning

    try:
        planning.plan_key(None, ["secret"])  # type: ignore[arg-type]
    except AttributeError as exc:
        message = unexpected(exc)
    assert message.startswith("unexpected AttributeError in llmdeploy.controller.planning.plan_key")
    assert "secret" not in message and "NoneType" not in message
    assert unexpected(ValueError("from nowhere")).startswith("unexpected ValueError: a bug")


def test_only_the_objects_own_children_are_applied_and_forced(
    reconciler: Reconciler, cluster: Cluster
) -> None:
    # The Deployment is there already and this object's (the index has not seen it yet, as
    # after a restart): forced, so a hand edit is repaired. The Service was made by someone
    # else: refused before any write to it, and said so.
    cluster.live[("Deployment", "m")] = "u1"
    cluster.live[("Service", "m")] = ""
    assert reconciler._reconcile_one(KEY)[0] == "error"
    assert cluster.applied == [("Deployment", "m", True)]
    degraded = conditions(cluster)["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "ApplyFailed"
    assert degraded["message"].startswith("Service m already exists and is not this")
    assert [e[0] for e in cluster.events if e[2]] == ["ApplyFailed"]

    # Gone: created, without force, and the rest follows.
    del cluster.live[("Service", "m")]
    watched(reconciler, cluster)
    cluster.applied.clear()
    assert reconciler._reconcile_one(KEY)[0] == "success"
    assert ("Service", "m", False) in cluster.applied
    assert ("PodDisruptionBudget", "m", False) in cluster.applied


def test_once_relisted_a_name_is_looked_up_in_memory_not_asked_for(
    reconciler: Reconciler, cluster: Cluster
) -> None:
    # The relist found a Service of that name that no LLMDeployment controls: refused without
    # a request; the Deployment's name is free: made without force, nothing asked.
    reconciler.names.relisted({("ns", "Service", "m"): ""}, reconciler.names.mark())
    assert reconciler._reconcile_one(KEY)[0] == "error"
    assert cluster.asked == []
    assert cluster.applied == [("Deployment", "m", False)]
    assert conditions(cluster)["Degraded"]["message"].startswith("Service m already exists")

    # Its watch says it went: the rest is made, still without asking.
    reconciler.child_event("Service", "DELETED", {"metadata": {"namespace": "ns", "name": "m"}})
    watched(reconciler, cluster)
    cluster.applied.clear()
    assert reconciler._reconcile_one(KEY)[0] == "success"
    assert cluster.asked == []
    assert ("Service", "m", False) in cluster.applied


def test_a_new_plan_and_its_applies_are_one_event(reconciler: Reconciler, cluster: Cluster) -> None:
    reconciler.names.relisted({}, reconciler.names.mark())
    assert reconciler._reconcile_one(KEY)[0] == "success"
    assert [e[0] for e in cluster.events] == ["Planned"]
    assert cluster.events[0][1].endswith("; applied Deployment/m, Service/m, PodDisruptionBudget/m")


def test_applies_are_logged_even_when_the_status_write_then_conflicts(
    reconciler: Reconciler, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    # The retry finds the children applied and applies nothing: the log must already say so.
    caplog.set_level(logging.INFO, "llmdeploy.reconcile")
    reconciler.names.relisted({}, reconciler.names.mark())
    cluster.body["metadata"]["resourceVersion"] = "9"  # someone wrote after the watch's event
    assert reconciler._reconcile_one(KEY)[0] != "success"
    assert "ns/m: applied Deployment/m, Service/m, PodDisruptionBudget/m" in caplog.text
    assert cluster.events == []


def test_a_prune_waits_for_the_status_that_says_why(
    reconciler: Reconciler, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback prunes the candidate whose crash loop it records: if the status write
    conflicts, nothing is pruned, so the retry still sees the crash and decides again; once
    the status is written the prune follows."""
    rolled_back = Outcome(
        prune=((("Deployment", "m-candidate"), "uid-c"),),
        status=LLMDeploymentStatus(phase="Degraded"),
    )
    monkeypatch.setattr(reconciler_module, "decide", lambda *_: rolled_back)
    cluster.body["metadata"]["resourceVersion"] = "9"  # someone wrote after the watch's event
    assert reconciler._reconcile_one(KEY)[0] != "success"
    assert cluster.deleted == []
    watched(reconciler, cluster)
    assert reconciler._reconcile_one(KEY)[0] == "success"
    assert cluster.deleted == [("Deployment", "m-candidate")]
    assert cluster.body["status"]["phase"] == "Degraded"


def test_a_settled_object_is_measured_again_when_due_and_not_decided_before(
    catalog: Catalog, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settled skip holds until the next measurement is due, then the object is decided
    (and measured) again. Prometheus is a stand-in that answers nothing."""
    measured: list[float] = []

    def collect(
        config: Any, queries: Any, end: float, **_: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        measured.append(end)
        return {}, {}

    decided: list[int] = []
    real_decide = reconciler_module.decide

    def counting(snap: Any, config: Any) -> Any:
        decided.append(1)
        return real_decide(snap, config)

    def serving(obj: dict[str, Any], owner: Owner, *, take_over: bool) -> LiveChild:
        # Every replica ready at once, so no pending pods are asked for.
        n = obj["spec"].get("replicas", 0)
        status = {"replicas": n, "readyReplicas": n, "updatedReplicas": n}
        metadata = {**obj["metadata"], "uid": f"uid-{obj['kind']}", "resourceVersion": "1"}
        return live_child(obj["kind"], {**obj, "metadata": metadata, "status": status})

    monkeypatch.setattr(cluster, "apply", serving)
    monkeypatch.setattr(reconciler_module, "collect", collect)
    monkeypatch.setattr(reconciler_module, "decide", counting)
    settings = OperatorSettings(
        standalone=True,
        workers=1,
        status_interval_seconds=3600,
        prometheus_url="http://127.0.0.1:9",
        measure_interval_seconds=2,  # status.observed.end is in whole seconds
    )
    made = Reconciler(settings, catalog, load_image_lock(), cluster)  # type: ignore[arg-type]
    cluster.body["spec"]["slo"] = {"ttftMs": 500}
    made.object_event("ADDED", copy.deepcopy(cluster.body))
    made.reconcile(KEY)  # planned and applied: the workload exists from now on
    watched(made, cluster)
    made.reconcile(KEY)  # measured
    assert len(measured) == 1 and "observed" in cluster.body["status"]
    assert conditions(cluster)["SLOMet"]["status"] == "Unknown"  # no data: never a guess
    watched(made, cluster)
    writes = len(cluster.patches)
    result, requeue = made.reconcile(KEY)  # nothing to do until the next measurement
    assert result == "success" and requeue is not None and 0 < requeue <= 2
    assert len(cluster.patches) == writes
    before = len(decided)
    made.reconcile(KEY)  # a resync meanwhile: settled, not decided again
    assert len(decided) == before and len(measured) == 1
    threading.Event().wait(requeue + 0.05)  # the requeue comes back no earlier than this
    made.reconcile(KEY)
    assert len(measured) == 2


def test_a_status_patch_removes_what_a_nested_field_no_longer_has() -> None:
    """A merge patch merges objects: a figure status.observed no longer has is sent as null,
    or the API server would keep the old one beside the new Unknown."""
    current = {
        "phase": "Ready",
        "conditions": [],
        "excludedGpus": [],
        "observed": {"windowSeconds": 20, "end": "t1", "requests": 5.0, "unknown": {}},
    }
    unknown = {"requests": "no request counter (connection failed)"}
    status = LLMDeploymentStatus(
        phase="Ready", observed=Observed(window_seconds=20, end="t2", unknown=unknown)
    )
    patch = status_patch(current, status)
    assert patch == {"observed": {"end": "t2", "requests": None, "unknown": unknown}}
    assert merged(current, patch) == status.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert status_patch(merged(current, patch), status) == {}
