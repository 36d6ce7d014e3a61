"""The operator measures: status.observed, SLOMet and PlanDrift from a real Prometheus scraping
a simulated vLLM engine that serves steady traffic, on a short measurement interval and window.
Latency above the SLO, then within it, then Prometheus stopped. The same Prometheus scrapes the
operator's per-LLMDeployment gauges and evaluates manifests/monitoring/rules, and every panel
of the Grafana dashboard finds data in it."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from llmdeploy import monitoring

from .e2e_support import KWOK_TOLERATION, wait_until
from .operator_harness import REPO_ROOT, Operator, free_port, kubectl
from .prometheus_harness import Prometheus, VllmMetricsSim

GROUP, VERSION, PLURAL = "llmdeploy.io", "v1alpha1", "llmdeployments"
NAME = "measured"
SETTINGS = {
    "LLMDEPLOY_MEASURE_INTERVAL_SECONDS": "2",
    "LLMDEPLOY_MEASURE_WINDOW": "20s",
}
# The example's workload and SLO: 2 requests/s of 1024 + 256 tokens, TTFT 1500 ms, TPOT 60 ms.
SLOW_TTFT_S, FAST_TTFT_S, GAP_S = 3.0, 0.3, 0.04


class Traffic:
    """Requests finish every second (two by default), with the TTFT, gap between tokens and
    prompt length the test sets (a thread)."""

    def __init__(self, sim: VllmMetricsSim, ttft_s: float, per_second: int = 2) -> None:
        self.sim = sim
        self.per_second = per_second
        self.ttft_s = ttft_s
        self.gap_s = GAP_S
        self.input_tokens = 1024
        self.noise = 0.0  # each second's figures drawn within +-noise of the set ones
        self.random = random.Random(5)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            ttft, gap, prompt = (1 + self.random.uniform(-self.noise, self.noise) for _ in range(3))
            self.sim.finish(
                self.per_second,
                ttft_s=self.ttft_s * ttft,
                gap_s=self.gap_s * gap,
                input_tokens=round(self.input_tokens * prompt),
                output_tokens=256,
            )

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


@pytest.fixture
def served(
    namespace: str, operator: Operator, request: pytest.FixtureRequest
) -> Iterator[tuple[Traffic, Prometheus]]:
    """A Prometheus scraping the engine and the operator, with llmdeploy's rules, as the
    operator's default endpoint; the operator restarts with it and a short measurement
    interval, and again without them at the end. The traffic's TTFT starts at the test's
    parameter, if any, else above the SLO."""
    sim = VllmMetricsSim()
    metrics_port = free_port()
    prometheus = Prometheus(
        sim.port,
        {"namespace": namespace, "llmdeploy_io_deployment": NAME},
        operator_port=metrics_port,
        rule_files=(REPO_ROOT / monitoring.RULES,),
    )
    prometheus.start()
    traffic = Traffic(sim, getattr(request, "param", SLOW_TTFT_S))
    changed = {
        **SETTINGS,
        "LLMDEPLOY_PROMETHEUS_URL": prometheus.url,
        "LLMDEPLOY_METRICS_PORT": str(metrics_port),
    }
    operator.stop()
    operator.settings.update(changed)
    operator.start()
    try:
        yield traffic, prometheus
    finally:
        traffic.close()
        prometheus.close()
        sim.close()
        operator.stop()
        for key in changed:
            operator.settings.pop(key, None)
        operator.start()


def deploy(kubeconfig: Path, namespace: str) -> None:
    body = yaml.safe_load((REPO_ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["metadata"]["name"] = NAME
    body["spec"]["placement"]["tolerations"] = [KWOK_TOLERATION]
    body["spec"]["replicas"] = 1
    result = kubectl(kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert result.returncode == 0, result.stderr


def status(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME
    )
    return obj.get("status") or {}  # type: ignore[no-any-return]


def condition(api: client.ApiClient, namespace: str, type_: str) -> dict[str, Any]:
    found = [c for c in status(api, namespace).get("conditions") or [] if c["type"] == type_]
    return found[0] if found else {}


def events(api: client.ApiClient, namespace: str, reason: str) -> list[client.CoreV1Event]:
    listed = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={NAME},reason={reason}"
    )
    return list(listed.items)


def told(api: client.ApiClient, namespace: str, reason: str, wanted: set[str]) -> list[str]:
    """The messages' heads ("SLOMet=False") of the events with this reason, once every wanted
    head is among them: events are posted after the status write that the test saw."""

    def all_there() -> list[str] | None:
        heads = [e.message.split(" (")[0] for e in events(api, namespace, reason)]
        return heads if wanted <= set(heads) else None

    return wait_until(all_there, what=f"{reason} events {sorted(wanted)}", timeout=30)  # type: ignore[no-any-return]


def turns(api: client.ApiClient, namespace: str, type_: str, to: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = condition(api, namespace, type_)
        return found if found.get("status") == to else None

    return wait_until(reached, what=f"{type_}={to}", timeout=90)  # type: ignore[no-any-return]


def test_slo_met_follows_the_measured_latency_and_prometheus_going_away(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
) -> None:
    traffic, prometheus = served
    deploy(kubeconfig_path, namespace)

    # TTFT 3 s against a target of 1.5 s: not one request meets it.
    missed = turns(kube_api, namespace, "SLOMet", "False")
    assert missed["reason"] == "TargetMissed"
    assert "TTFT 1500 ms: met by 0.0%, under 95.0%" in missed["message"]
    observed = status(kube_api, namespace)["observed"]
    # The first windows began before the engines did: measured since they began, so the
    # rate is the traffic's 2 requests/s, not a share of it.
    assert 0 < observed["windowSeconds"] <= 20
    assert observed["requestsPerSecond"] == pytest.approx(traffic.per_second, rel=0.15)
    served_since = observed["servedSince"]  # recorded by the first measurement that saw them
    assert served_since <= observed["end"]
    assert 2.5 < observed["ttftP95Seconds"] <= 5  # the (2.5, 5] bucket
    assert observed["tpotWithinSlo"] == 1.0
    assert observed["inputTokensMean"] == pytest.approx(1024)
    told(kube_api, namespace, "SLOMet", {"SLOMet=False"})
    warned = events(kube_api, namespace, "SLOMet")
    assert [(e.type, e.message.split(" (")[0]) for e in warned] == [("Warning", "SLOMet=False")]
    # The measured workload is the planned one: no drift.
    assert turns(kube_api, namespace, "PlanDrift", "False")["reason"] == "WithinPlan"
    # Ready is the rollout's, whatever the SLO says.
    turns(kube_api, namespace, "Ready", "True")
    assert condition(kube_api, namespace, "SLOMet")["status"] == "False"

    # Measured again and again with the same verdict: still one event. Then within the SLO.
    first_end = observed["end"]
    wait_until(
        lambda: status(kube_api, namespace)["observed"]["end"] != first_end,
        what="a later measurement",
        timeout=30,
    )
    traffic.ttft_s = FAST_TTFT_S
    met = turns(kube_api, namespace, "SLOMet", "True")
    assert met["reason"] == "TargetsMet" and "TTFT 1500 ms: met by" in met["message"]
    assert status(kube_api, namespace)["observed"]["ttftWithinSlo"] >= 0.95
    slo_events = told(kube_api, namespace, "SLOMet", {"SLOMet=False", "SLOMet=True"})
    assert sorted(slo_events) == ["SLOMet=False", "SLOMet=True"]

    # Prometheus stopped: every figure Unknown, and so are both conditions.
    # (While it shuts down, some queries may still be answered: a partial measurement, which
    # is Unknown too.)
    prometheus.stop()
    observed = wait_until(
        lambda: (seen := status(kube_api, namespace)["observed"]).get("requests") is None and seen,
        what="a measurement without Prometheus",
        timeout=60,
    )
    assert "ttftP95Seconds" not in observed and "costPerHour" not in observed
    assert "connection failed" in observed["unknown"]["requests"]
    assert observed["servedSince"] == served_since  # kept through every measurement
    unknown = condition(kube_api, namespace, "SLOMet")
    assert (unknown["status"], unknown["reason"]) == ("Unknown", "NotMeasured")
    assert condition(kube_api, namespace, "PlanDrift")["status"] == "Unknown"
    told(kube_api, namespace, "SLOMet", {"SLOMet=Unknown"})


def panel_queries(namespace: str) -> list[tuple[str, str]]:
    """Each panel's queries and each variable's, as Grafana sends them for this deployment."""
    dashboard = monitoring.dashboard()
    chosen = {"$namespace": namespace, "$deployment": NAME}

    def substituted(text: str) -> str:
        for variable, value in chosen.items():
            text = text.replace(variable, value)
        return text

    found = [
        (panel["title"], substituted(target["expr"]))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    # label_values(METRIC{...}, LABEL) is a query of METRIC's series.
    for variable in dashboard["templating"]["list"]:
        if "definition" in variable:
            inside = variable["definition"].removeprefix("label_values(").rsplit(",", 1)[0]
            found.append((f"variable {variable['name']}", substituted(inside)))
    return found


@pytest.mark.parametrize("served", [FAST_TTFT_S], indirect=True)
def test_the_operator_s_gauges_feed_the_rules_and_every_dashboard_panel(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
) -> None:
    _, prometheus = served
    deploy(kubeconfig_path, namespace)
    turns(kube_api, namespace, "SLOMet", "True")
    turns(kube_api, namespace, "PlanDrift", "False")

    # The operator's gauges, labelled by the plan, say what status says.
    written = status(kube_api, namespace)
    plan = written["plan"]
    labels = {
        "namespace": namespace,
        "llmdeployment": NAME,
        "gpu": written["gpu"],
        "quantization": written["quantization"],
        "engine": "vllm",
    }
    assert operator.samples("llmdeploy_plan_replicas", **labels) == [1.0]
    assert operator.samples("llmdeploy_plan_cost_per_hour_usd", **labels) == [
        float(written["costPerHour"])
    ]
    assert operator.samples("llmdeploy_plan_ttft_seconds", **labels) == [
        plan["estimatedTtftMs"] / 1000
    ]
    assert operator.samples("llmdeploy_slo_ttft_seconds", **labels) == [1.5]
    # One series per status of each condition, 1 for the status it has (set just after the
    # status write the test saw).
    for gauge, now in (("llmdeploy_slo_met", "True"), ("llmdeploy_plan_drift", "False")):
        wait_until(
            lambda g=gauge, n=now: operator.samples(g, status=n, **labels) == [1.0],
            what=f"{gauge} {now}",
            timeout=10,
        )
        others = {"True", "False", "Unknown"} - {now}
        assert [operator.samples(gauge, status=s, **labels) for s in sorted(others)] == [[0.0]] * 2

    # Every query of the dashboard answers through the Prometheus HTTP API, with a number.
    def answered(promql: str) -> list[float]:
        values = [float(r["value"][1]) for r in prometheus.query(promql)]
        return [v for v in values if v == v]  # NaN: no requests in the window

    for title, promql in panel_queries(namespace):
        wait_until(lambda q=promql: answered(q), what=f"data for {title}: {promql}", timeout=60)
    # The rules join engine and operator series: every TTFT (0.3 s) is within the 1.5 s SLO.
    attainment = f'llmdeploy:ttft_slo_attainment:ratio_rate5m{{namespace="{namespace}"}}'
    assert answered(attainment) == [1.0]

    # Deleted: no series of it is left on the operator's /metrics.
    deleted = kubectl(kubeconfig_path, "-n", namespace, "delete", "llmdeployment", NAME)
    assert deleted.returncode == 0, deleted.stderr
    for gauge in ("llmdeploy_plan_replicas", "llmdeploy_slo_met", "llmdeploy_slo_ttft_seconds"):
        wait_until(
            lambda g=gauge: not operator.samples(g, namespace=namespace),
            what=f"{gauge} of the deleted deployment gone",
            timeout=30,
        )
