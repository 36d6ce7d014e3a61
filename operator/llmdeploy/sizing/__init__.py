"""Pure sizing: (spec, catalog) -> Plan. No I/O, no Kubernetes."""

from llmdeploy.sizing.model_facts import ModelFacts, SpecError, resolve_model
from llmdeploy.sizing.optimizer import feasible_alternatives, performance_at, plan_deployment
from llmdeploy.sizing.performance import LatencyCalibration, Performance
from llmdeploy.sizing.plan import Alternative, Plan

__all__ = [
    "Alternative",
    "LatencyCalibration",
    "ModelFacts",
    "Performance",
    "Plan",
    "SpecError",
    "feasible_alternatives",
    "performance_at",
    "plan_deployment",
    "resolve_model",
]
