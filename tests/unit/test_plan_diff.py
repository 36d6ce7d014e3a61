"""The pure part of `llmdeploy plan --diff`: reading a side, what changes, the pilot's $/h."""

from __future__ import annotations

from typing import Any

import pytest

from llmdeploy.sizing import Plan
from llmdeploy.sizing.diff import (
    FIELDS,
    NOT_COMPARED,
    DiffInputError,
    candidate_replicas,
    diff_plans,
    format_diff,
    side,
)

L4: dict[str, Any] = {
    "feasible": True,
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "engine": "vllm",
    "engineVersion": "0.11.0",
    "gpu": "nvidia-l4",
    "gpuCount": 1,
    "tensorParallel": 1,
    "pipelineParallel": 1,
    "quantization": "fp8",
    "kvCacheDtype": "auto",
    "estimatedTtftMs": 235.9,
    "replicas": 4,
    "costPerHour": 3.2,
    "costPerMillionTokens": 1.347,
}
H100 = L4 | {
    "gpu": "nvidia-h100-80gb",
    "gpuCount": 2,
    "tensorParallel": 2,
    "estimatedTtftMs": 120.0,
    "replicas": 3,
    "costPerHour": 18.0,
    "costPerMillionTokens": 2.5,
}


def deployment(plan: dict[str, Any], replicas: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"plan": plan, "costPerHour": "ignored", "rollout": {"phase": "x"}}
    if replicas is not None:
        status["replicas"] = replicas
    return {
        "apiVersion": "llmdeploy.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "chat", "namespace": "prod"},
        "spec": {"model": {"name": "m"}},
        "status": status,
    }


def test_every_plan_field_but_reasons_and_alternatives_is_compared() -> None:
    names = [name for name, _ in FIELDS]
    assert len(names) == len(set(names))
    assert set(names) == set(Plan.model_fields) - NOT_COMPARED


def test_a_plan_and_an_objects_status_plan_are_read_alike() -> None:
    plan = side(L4, "a.json")
    obj = side(deployment(L4), "b.yaml")
    assert (plan.kind, plan.object, plan.replicas_from) == ("Plan", None, "plan")
    assert (obj.kind, obj.object, obj.replicas_from) == ("LLMDeployment", "prod/chat", "plan")
    assert plan.plan == obj.plan
    assert plan.replicas == obj.replicas == 4 and plan.cost_per_hour == obj.cost_per_hour == 3.2
    # `kubectl get llmdeployments -o yaml` of one object, and `-o jsonpath={.status}`.
    listed = side({"kind": "List", "items": [deployment(L4)]}, "c.yaml")
    assert listed.object == "prod/chat" and listed.plan == plan.plan
    assert side({"plan": L4, "replicas": 2}, "d.yaml").replicas == 2


def test_an_objects_replicas_are_its_status_replicas_and_priced_at_them() -> None:
    running = side(deployment(L4, replicas=6), "old.yaml")
    assert (running.replicas_from, running.replicas) == ("status.replicas", 6)
    assert running.cost_per_hour == pytest.approx(3.2 / 4 * 6)
    row = {r.field: r for r in diff_plans(running, side(L4, "new.json")).rows}
    assert (row["replicas"].old, row["replicas"].new) == (6, 4)
    assert (row["costPerHour"].old, row["costPerHour"].new) == (4.8, 3.2)
    assert "old: 6 replica(s) from status.replicas (the plan sized 4)" in format_diff(
        diff_plans(running, side(L4, "new.json"))
    )


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ([L4], "a.yaml: expected a mapping"),
        ({"kind": "Pod"}, "a.yaml: kind: 'Pod' is neither"),
        ({"spec": {}}, "a.yaml: feasible: missing"),
        ({"kind": "LLMDeployment", "metadata": {"name": "x"}}, "status.plan: missing"),
        (deployment(L4 | {"gpuCount": -1}), "a.yaml: status.plan.gpuCount: Input should be"),
        (deployment(L4 | {"costPerHour": "cheap"}), "status.plan.costPerHour"),
        (L4 | {"replicas": 1.5}, "a.yaml: replicas: Input should be"),
        ({"feasible": True, "engine": "vllm"}, "a.yaml: model: Field required"),
        ({"plan": L4, "replicas": -1}, "a.yaml: status.replicas: Input should be"),
        ({"kind": "List", "items": []}, "a.yaml: items: expected one LLMDeployment, found 0"),
    ],
)
def test_bad_input_names_the_file_and_the_field(document: object, words: str) -> None:
    with pytest.raises(DiffInputError) as caught:
        side(document, "a.yaml")
    assert words in str(caught.value)


def test_identical_plans_change_nothing_and_pilot_nothing() -> None:
    diff = diff_plans(side(L4, "a.json"), side(deployment(L4), "b.yaml"))
    assert diff.changed == [] and not any(r.changed for r in diff.rows)
    assert diff.pilot is None and diff.no_pilot == "no change: nothing to pilot"
    assert "no change" in format_diff(diff) and "*" not in format_diff(diff)


def test_a_plan_stored_before_expert_parallel_compares_as_ep_1() -> None:
    """A stored plan without expertParallel (made before the field) against the same plan
    made now at EP 1 changes nothing; against EP 2 it does."""
    moe = L4 | {"expertParallel": 1}
    assert diff_plans(side(L4, "old.json"), side(moe, "new.json")).changed == []
    spread = diff_plans(side(L4, "old.json"), side(L4 | {"expertParallel": 2}, "new.json"))
    assert spread.changed == ["expertParallel"]


def test_a_new_sku_marks_what_changes_and_prices_the_overlap() -> None:
    diff = diff_plans(side(deployment(L4, replicas=5), "old.yaml"), side(H100, "new.json"))
    assert diff.changed == [
        "gpu",
        "gpuCount",
        "tensorParallel",
        "estimatedTtftMs",
        "replicas",
        "costPerHour",
        "costPerMillionTokens",
    ]
    pilot = diff.pilot
    assert pilot is not None and diff.no_pilot is None
    # 10% of 3 replicas is one; the current generation runs its 5 at 0.80 $/h each.
    assert (pilot.current_replicas, pilot.candidate_replicas) == (5, 1)
    assert (pilot.current_cost_per_hour, pilot.candidate_cost_per_hour) == (4.0, 6.0)
    assert pilot.overlap_cost_per_hour == 10.0 and pilot.promoted_cost_per_hour == 18.0
    text = format_diff(diff)
    assert "*  GPU" in text and "   engine " in text  # marked, and not
    assert "4.00 (current) + 6.00 (candidate) = 10.00" in text
    assert "estimate from the catalog prices" in text


def test_the_pilot_share_sizes_the_candidate() -> None:
    old, new = side(L4, "old.json"), side(H100 | {"replicas": 20, "costPerHour": 120.0}, "n")
    pilot = diff_plans(old, new, percent=25).pilot
    assert pilot is not None and pilot.candidate_replicas == 5
    assert pilot.overlap_cost_per_hour == 3.2 + 5 * 6.0


@pytest.mark.parametrize(
    ("percent", "replicas", "expected"),
    [(10, 4, 1), (10, 10, 1), (10, 11, 2), (7, 100, 7), (1, 1, 1), (100, 3, 3), (50, 0, 1)],
)
def test_candidate_replicas_round_up_to_at_least_one(
    percent: int, replicas: int, expected: int
) -> None:
    assert candidate_replicas(percent, replicas) == expected


def test_no_pilot_for_an_infeasible_plan_or_without_a_price() -> None:
    infeasible = {"feasible": False, "model": "m", "engine": "vllm", "reasons": ["too big"]}
    diff = diff_plans(side(L4, "a"), side(infeasible, "b"))
    assert diff.pilot is None and diff.no_pilot == "the new plan is not feasible: too big"
    assert "NO PILOT  the new plan is not feasible: too big" in format_diff(diff)
    diff = diff_plans(side(infeasible, "a"), side(L4, "b"))
    assert diff.pilot is None and diff.no_pilot is not None and "old plan" in diff.no_pilot
    unpriced = side(H100 | {"costPerHour": None}, "b")
    assert diff_plans(side(L4, "a"), unpriced).no_pilot == (
        "a plan has no price (its GPU has none in the catalog)"
    )
