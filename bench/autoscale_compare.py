"""llmdeploy's autoscaling policy vs Kubernetes HPA's default behavior, in the simulator.

Same decision core, same metrics, same traces (bench/traces/*.csv); only the behavior differs.
Prints replica-seconds (GPU cost) and seconds with estimated TTFT above the SLO.
Run: .venv/bin/python bench/autoscale_compare.py
"""

from __future__ import annotations

from pathlib import Path

from llmdeploy.autoscale.policy import effective_scaling, hpa_default_spec
from llmdeploy.autoscale.simulator import config_from_plan, read_trace, simulate, summarize
from llmdeploy.catalog import load_catalog
from llmdeploy.cli import read_manifest
from llmdeploy.sizing import plan_deployment

HERE = Path(__file__).parent
TRACES = ("step", "ramp", "spiky", "diurnal", "randomwalk")  # the last one held out


def main() -> None:
    resource = read_manifest(str(HERE / "autoscale-spec.yaml"))
    spec = resource.spec
    assert spec.scaling is not None
    plan = plan_deployment(spec, load_catalog())
    print("| trace | policy | replica-seconds | SLO-violation seconds |")
    print("|---|---|---|---|")
    for name in TRACES:
        trace = read_trace((HERE / "traces" / f"{name}.csv").read_text())
        config = config_from_plan(plan, spec.workload, None, spec.scaling.min_replicas)
        for label, scaling in (
            ("llmdeploy", spec.scaling),
            ("HPA default", hpa_default_spec(spec.scaling)),
        ):
            policy = effective_scaling(scaling, plan, config.cold_start_s)
            summary = summarize(simulate(trace, policy, config), spec.slo.ttft_ms)
            print(
                f"| {name} | {label} | {summary['replicaSeconds']:.0f} "
                f"| {summary['sloViolationSeconds']:.0f} |"
            )
    print(
        f"\ncold start {config.cold_start_s:.0f} s, {config.capacity_rps:.2f} requests/s per "
        f"replica ({plan.gpu} x{plan.gpu_count} {plan.quantization})"
    )


if __name__ == "__main__":
    main()
