"""Two plans side by side (`llmdeploy plan --diff OLD NEW`): what changes, and the USD per hour
while a pilot runs both generations. Pure: the caller reads the files.

A side is a plan (`llmdeploy plan -o json|yaml`) or an LLMDeployment whose status.plan the
operator wrote. An object's replicas are its status.replicas (what the autoscaler or
spec.replicas made of the plan), so its USD per hour is the generation's as it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from llmdeploy.api.types import format_validation_error
from llmdeploy.sizing.plan import Amount, Number, Plan, PlanModel

DEFAULT_PILOT_PERCENT = 10
ESTIMATE = (
    "an estimate from the catalog prices the plans were made with (GPU hours only), not a bill"
)
Percent = Annotated[int, Field(ge=1, le=100)]
Value = bool | int | float | str | None
REPLICAS: TypeAdapter[int] = TypeAdapter(Number)

# Every Plan field but the reasons and the alternatives, in the order a reader compares them,
# with the label the table shows. A test keeps it complete.
FIELDS: tuple[tuple[str, str], ...] = (
    ("feasible", "feasible"),
    ("model", "model"),
    ("checkpoint", "checkpoint"),
    ("engine", "engine"),
    ("engine_version", "engine version"),
    ("gpu", "GPU"),
    ("gpu_count", "GPUs per replica"),
    ("tensor_parallel", "tensor parallel"),
    ("pipeline_parallel", "pipeline parallel"),
    ("expert_parallel", "expert parallel"),
    ("quantization", "quantization"),
    ("kv_cache_dtype", "KV cache dtype"),
    ("max_context_length", "max context length"),
    ("max_num_seqs", "max sequences"),
    ("max_num_batched_tokens", "max batched tokens"),
    ("gpu_memory_utilization", "GPU memory utilization"),
    ("weights_gib_per_gpu", "weights GiB/GPU"),
    ("activation_gib_per_gpu", "activations GiB/GPU"),
    ("non_torch_gib_per_gpu", "non-torch GiB/GPU"),
    ("cuda_graph_gib_per_gpu", "CUDA graphs GiB/GPU"),
    ("kv_cache_gib_per_gpu", "KV cache GiB/GPU"),
    ("kv_cache_tokens", "KV cache tokens/replica"),
    ("max_concurrency", "max concurrency"),
    ("estimated_ttft_ms", "TTFT ms (predicted)"),
    ("estimated_tpot_ms", "TPOT ms (predicted)"),
    ("estimated_tokens_per_second", "tokens/s per replica"),
    ("ttft_calibration", "TTFT calibration"),
    ("tpot_calibration", "TPOT calibration"),
    ("replicas", "replicas"),
    ("cost_per_hour", "$/h (all replicas)"),
    ("cost_per_million_tokens", "$ per 1M output tokens"),
)
NOT_COMPARED = frozenset({"reasons", "alternatives"})


class DiffInputError(ValueError):
    """A document that is neither a plan nor an LLMDeployment with status.plan; the message
    names the field."""


class Side(PlanModel):
    """One of the two plans, and where it came from."""

    source: str = Field(description="The file, or stdin.")
    kind: Literal["Plan", "LLMDeployment"]
    object: str | None = Field(default=None, description="namespace/name of an LLMDeployment.")
    replicas_from: Literal["plan", "status.replicas"]
    replicas: Number | None = Field(description="The replicas counted.")
    cost_per_hour: Amount | None = Field(description="USD per hour at those replicas.")
    plan: Plan = Field(exclude=True)

    def value(self, name: str) -> Value:
        if name in ("replicas", "cost_per_hour"):
            counted: Value = getattr(self, name)
            return counted
        found: Value = getattr(self.plan, name)
        return found


class Row(PlanModel):
    field: str = Field(description="The plan's JSON key.")
    label: str
    old: Value
    new: Value
    changed: bool


class Pilot(PlanModel):
    """Both generations at once: the current one at its replicas, the candidate at the
    pilot's share of its own."""

    traffic_percent: Percent
    current_replicas: Number
    current_cost_per_hour: Amount
    candidate_replicas: Number
    candidate_cost_per_hour: Amount
    overlap_cost_per_hour: Amount
    promoted_cost_per_hour: Amount = Field(description="The candidate at all its replicas.")
    basis: str = ESTIMATE


class PlanDiff(PlanModel):
    old: Side
    new: Side
    rows: list[Row]
    changed: list[str] = Field(description="The fields that differ (JSON keys).")
    pilot: Pilot | None
    no_pilot: str | None = Field(description="Why there is no pilot to price.")


def side(document: object, source: str) -> Side:
    """A plan, an LLMDeployment with status.plan (or its status alone), or a List of one."""
    if not isinstance(document, Mapping):
        raise DiffInputError(f"{source}: expected a mapping (a plan or an LLMDeployment)")
    if document.get("kind") == "List":
        items = document.get("items")
        if not isinstance(items, list) or len(items) != 1:
            count = len(items) if isinstance(items, list) else 0
            raise DiffInputError(f"{source}: items: expected one LLMDeployment, found {count}")
        return side(items[0], source)
    kind = document.get("kind")
    if kind is not None and kind != "LLMDeployment":
        raise DiffInputError(f"{source}: kind: {kind!r} is neither a plan nor an LLMDeployment")
    if kind == "LLMDeployment" or "status" in document:
        return _object_side(document, source)
    if "plan" in document and "feasible" not in document:  # `-o jsonpath={.status}`
        return _object_side({"status": document}, source)
    if "feasible" not in document:
        raise DiffInputError(
            f"{source}: feasible: missing: neither a plan (`llmdeploy plan -o json`) nor an "
            "LLMDeployment with status.plan"
        )
    plan = _plan(document, source, "")
    return _side(source, "Plan", None, plan, "plan", plan.replicas)


def _object_side(document: Mapping[str, Any], source: str) -> Side:
    metadata = document.get("metadata")
    name = None
    if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
        name = f"{metadata.get('namespace') or 'default'}/{metadata['name']}"
    status = document.get("status")
    if not isinstance(status, Mapping) or status.get("plan") is None:
        whose = name or "the LLMDeployment"
        raise DiffInputError(
            f"{source}: status.plan: missing: the operator has not planned {whose}"
        )
    plan = _plan(status["plan"], source, "status.plan")
    if status.get("replicas") is None:
        return _side(source, "LLMDeployment", name, plan, "plan", plan.replicas)
    try:
        replicas = REPLICAS.validate_python(status["replicas"])
    except ValidationError as exc:
        raise DiffInputError(
            f"{source}: {format_validation_error(exc, 'status.replicas')}"
        ) from None
    return _side(source, "LLMDeployment", name, plan, "status.replicas", replicas)


def _plan(document: object, source: str, path: str) -> Plan:
    try:
        return Plan.model_validate(document)
    except ValidationError as exc:
        raise DiffInputError(f"{source}: {format_validation_error(exc, path)}") from None


def _side(
    source: str,
    kind: Literal["Plan", "LLMDeployment"],
    name: str | None,
    plan: Plan,
    replicas_from: Literal["plan", "status.replicas"],
    replicas: int | None,
) -> Side:
    per_replica = per_replica_cost(plan)
    cost = None if per_replica is None or replicas is None else round(per_replica * replicas, 2)
    return Side(
        source=source,
        kind=kind,
        object=name,
        replicas_from=replicas_from,
        replicas=replicas,
        cost_per_hour=cost,
        plan=plan,
    )


def per_replica_cost(plan: Plan) -> float | None:
    """USD per hour of one replica of the plan's layout."""
    if plan.cost_per_hour is None or not plan.replicas:
        return None
    return plan.cost_per_hour / plan.replicas


def candidate_replicas(percent: int, replicas: int) -> int:
    """The candidate's replicas for `percent` of traffic: at least one (integer arithmetic:
    7% of 100 is 7, not 8)."""
    return max(1, -(-percent * replicas // 100))


def _compared(name: str, plan: Side) -> Value:
    """A field's value as compared: a plan stored before expertParallel existed held every
    expert TP-split, as EP 1 does (controller/recommend.py `_layout` reads it so too)."""
    value = plan.value(name)
    return 1 if name == "expert_parallel" and value is None else value


def diff_plans(old: Side, new: Side, percent: int = DEFAULT_PILOT_PERCENT) -> PlanDiff:
    aliases = Plan.model_fields
    rows = [
        Row(
            field=aliases[name].alias or name,
            label=label,
            old=old.value(name),
            new=new.value(name),
            changed=_compared(name, old) != _compared(name, new),
        )
        for name, label in FIELDS
    ]
    changed = [row.field for row in rows if row.changed]
    pilot, why = _pilot(old, new, percent) if changed else (None, "no change: nothing to pilot")
    return PlanDiff(old=old, new=new, rows=rows, changed=changed, pilot=pilot, no_pilot=why)


def _pilot(old: Side, new: Side, percent: int) -> tuple[Pilot | None, str | None]:
    if not new.plan.feasible:
        return None, "the new plan is not feasible: " + "; ".join(new.plan.reasons)
    if not old.plan.feasible:
        return None, "the old plan is not feasible: no current generation runs beside a pilot"
    per_replica = per_replica_cost(new.plan)
    if old.cost_per_hour is None or old.replicas is None or per_replica is None:
        return None, "a plan has no price (its GPU has none in the catalog)"
    replicas = new.replicas or 0  # scaled to zero: the pilot still needs one
    candidates = candidate_replicas(percent, replicas)
    candidate = round(per_replica * candidates, 2)
    pilot = Pilot(
        traffic_percent=percent,
        current_replicas=old.replicas,
        current_cost_per_hour=old.cost_per_hour,
        candidate_replicas=candidates,
        candidate_cost_per_hour=candidate,
        overlap_cost_per_hour=round(old.cost_per_hour + candidate, 2),
        promoted_cost_per_hour=round(per_replica * replicas, 2),
    )
    return pilot, None


def format_diff(diff: PlanDiff) -> str:
    """The table `plan --diff` prints: a `*` marks what changes."""
    lines = [f"DIFF  old: {_origin(diff.old)}", f"      new: {_origin(diff.new)}"]
    table = [("", "FIELD", "OLD", "NEW")] + [
        ("*" if r.changed else "", r.label, _text(r.field, r.old), _text(r.field, r.new))
        for r in diff.rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        lines.append("  ".join([*cells, row[3]]).rstrip())
    for label, one in (("old", diff.old), ("new", diff.new)):
        if one.replicas_from == "status.replicas" and one.replicas != one.plan.replicas:
            lines.append(
                f"  {label}: {one.replicas} replica(s) from status.replicas (the plan sized "
                f"{one.plan.replicas}); $/h is at {one.replicas}"
            )
    if not diff.changed:
        lines.append("no change: the two plans are the same")
    elif diff.pilot is None:
        lines.append(f"NO PILOT  {diff.no_pilot}")
    else:
        p = diff.pilot
        lines.append(
            f"PILOT  {p.traffic_percent}% of traffic: {p.candidate_replicas} candidate "
            f"replica(s) beside the current {p.current_replicas}"
        )
        lines.append(
            f"  $/h while piloting  {p.current_cost_per_hour:.2f} (current) + "
            f"{p.candidate_cost_per_hour:.2f} (candidate) = {p.overlap_cost_per_hour:.2f}; "
            f"after promotion {p.promoted_cost_per_hour:.2f}"
        )
        lines.append(f"  {p.basis}")
    return "\n".join(lines) + "\n"


def _origin(one: Side) -> str:
    if one.kind == "Plan":
        return f"{one.source} (a plan)"
    return f"{one.source} (LLMDeployment {one.object or '(unnamed)'}, status.plan)"


def _text(field: str, value: Value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if field == "costPerHour" and isinstance(value, float | int):
        return f"{value:.2f}"
    return str(value)
