"""bench/ttft_simulation.py: vLLM V1's scheduler replayed on the planner's step costs."""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import corpus
import ttft_simulation as sim
from llmdeploy.catalog import Catalog, load_catalog
from llmdeploy.sizing.performance import StepModel

from .conftest import qwen3_32b_steps

HOST_S = 0.02


@pytest.fixture(scope="module")
def steps(catalog: Catalog) -> StepModel:
    return qwen3_32b_steps(catalog)


def run(
    steps: StepModel,
    prompts: list[int],
    outputs: list[int],
    *,
    concurrency: int,
    budget: int = 8192,
    max_seqs: int = 1024,
    async_scheduling: bool = False,
    stagger_s: float = 0.0,
) -> list[sim.Request]:
    return sim.simulate(
        steps,
        concurrency=concurrency,
        prompts=prompts,
        outputs=outputs,
        budget=budget,
        max_seqs=max_seqs,
        host_s=HOST_S,
        async_scheduling=async_scheduling,
        stagger_s=stagger_s,
    )


def test_a_lone_request_is_its_host_time_and_its_prompts_chunks(steps: StepModel) -> None:
    (lone,) = run(steps, [2500], [4], concurrency=1, budget=1000)
    chunks = 2 * steps.mixed_step_s(1000, 0) + steps.mixed_step_s(500, 0)
    assert lone.scheduled == pytest.approx(HOST_S)
    assert lone.ttft == pytest.approx(HOST_S + chunks)


def test_a_burst_is_served_first_come_first_served_in_steps_of_the_budget(
    steps: StepModel,
) -> None:
    """Three 600-token prompts at once, 1000-token steps: the first prompt and 400 tokens of
    the second fill step one; step two holds the first's decode, the second's last 200
    tokens and the third prompt: both get their first token at its end."""
    first, second, third = run(steps, [600] * 3, [8] * 3, concurrency=3, budget=1000)
    one = steps.mixed_step_s(1000, 0)
    two = steps.mixed_step_s(800, 1)
    assert first.ttft == pytest.approx(HOST_S + one)
    assert second.ttft == third.ttft == pytest.approx(HOST_S + one + two)
    assert first.scheduled == second.scheduled == HOST_S < third.scheduled


def test_the_closed_loop_sends_a_request_as_one_completes(steps: StepModel) -> None:
    """Two users, four requests of one output token each: the third request is sent when the
    first completes (at its first token), the fourth when the second does."""
    requests = run(steps, [100] * 4, [1] * 4, concurrency=2)
    assert [r.sent for r in requests[:2]] == [0.0, 0.0]
    assert requests[2].sent == pytest.approx(requests[0].first_token)
    assert requests[3].sent == pytest.approx(requests[1].first_token)


def test_max_num_seqs_holds_requests_back(steps: StepModel) -> None:
    requests = run(steps, [100] * 3, [50] * 3, concurrency=3, max_seqs=2)
    assert requests[2].scheduled > requests[0].first_token + 40 * steps.decode(2).step_s


def test_async_scheduling_admits_an_arrival_one_step_later(steps: StepModel) -> None:
    """A request that reaches the engine while others decode starts its prefill with the step
    after the next one: the next one was scheduled before it came."""
    step = steps.decode(1).step_s
    # The second request is sent midway through the first one's fourth decode step.
    kwargs = {"concurrency": 2, "stagger_s": steps.prefill_s(1024, 8192) + 3.5 * step}
    sync = run(steps, [1024] * 2, [100] * 2, **kwargs)
    overlapped = run(steps, [1024] * 2, [100] * 2, async_scheduling=True, **kwargs)
    late_sync, late_async = sync[1], overlapped[1]
    assert late_sync.scheduled - late_sync.arrival < step
    assert step <= late_async.scheduled - late_async.arrival < 2 * step


def test_fixed_lengths_started_together_stay_in_cohorts(steps: StepModel) -> None:
    """Users of a closed loop with fixed lengths who start together stay in lockstep: a cohort's
    prompts share one step, its requests complete in one step, and its users' next requests
    arrive together and share a step again, so every TTFT is the whole cohort's prefill (the
    cohort effect ai-dynamo/aiconfigurator's docs/design/queueing_model.md names for fixed
    isl/osl closed loops). Started a request apart, each request prefills alone."""
    locked = run(steps, [1024] * 12, [16] * 12, concurrency=4)
    for cohort in (locked[:4], locked[4:8], locked[8:]):
        assert len({r.scheduled for r in cohort}) == 1
        assert len({r.first_token for r in cohort}) == 1
        assert cohort[0].ttft == pytest.approx(HOST_S + steps.mixed_step_s(4 * 1024, 0))
    apart = 16 * steps.decode(4).step_s + steps.prefill_s(1024, 8192)
    spread = run(steps, [1024] * 12, [16] * 12, concurrency=4, stagger_s=apart / 4)
    assert len({r.scheduled for r in spread}) == 12
    assert statistics.median(r.ttft for r in spread) < locked[0].ttft / 2


def test_random_range_ratio_draws_lengths_below_the_nominal() -> None:
    import random

    drawn = sim.lengths(1000, 500, 0.8, random.Random(0))
    assert min(drawn) >= 800 and max(drawn) <= 1000 and len(set(drawn)) > 100
    assert sim.lengths(1000, 3, 0.0, random.Random(0)) == [1000] * 3


def _replay(catalog: Catalog, row_id: str) -> tuple[float, float]:
    """(closed form, replay) TTFT ms of a committed row."""
    row = next(r for r in corpus.load_latency() if r.id == row_id)
    client = sim.load_clients().get(row.id, sim.Client())
    replay = sim.replay_row(row, catalog, client, True)
    return corpus.predict_latency(row, catalog)[0], replay.ttft_ms


def test_a_lone_row_replays_as_the_closed_form() -> None:
    closed, replay = _replay(load_catalog(), "tt143-h100-qwen2.5-72b-tp2-c1-1024x128")
    assert replay == pytest.approx(closed, rel=1e-6)


def test_on_inferencemax_rows_the_closed_form_follows_the_replayed_scheduler() -> None:
    """The finding of branch ttftsim: where the client is known and its lengths vary
    (InferenceMAX, --random-range-ratio 0.8, 10 x concurrency prompts), the M/D/1 closed form
    is within a few percent of the scheduler replayed on the same step costs, so those rows'
    TTFT errors are not queueing."""
    catalog = load_catalog()
    clients = sim.load_clients()
    ids = [
        r.id
        for r in corpus.load_latency()
        if r.id.startswith("ix-")
        and "gptoss" in r.id
        and r.concurrency > 1
        and clients[r.id].range_ratio > 0
    ]
    assert len(ids) >= 30
    gaps = []
    for row_id in ids:
        closed, replay = _replay(catalog, row_id)
        gaps.append(abs(replay - closed) / closed)
    assert statistics.median(gaps) < 0.1


def test_the_closed_form_and_the_replay_see_one_step_budget_for_every_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The step budget has one source, bench/data/latency_engine.csv: the budget each path
    hands its step model is captured as it is used, row by row."""
    catalog = load_catalog()
    closed: dict[str, int] = {}
    replayed: dict[str, int] = {}
    row_id = ""
    real_estimate, real_simulate = corpus.estimate_performance, sim.simulate

    def estimate(*args: Any, **kwargs: Any) -> Any:
        closed[row_id] = kwargs["max_num_batched_tokens"]
        return real_estimate(*args, **kwargs)

    def simulate(*args: Any, **kwargs: Any) -> Any:
        replayed[row_id] = kwargs["budget"]
        return real_simulate(*args, **kwargs)

    monkeypatch.setattr(corpus, "estimate_performance", estimate)
    monkeypatch.setattr(sim, "simulate", simulate)
    clients = sim.load_clients()
    rows = corpus.load_latency()
    for row in rows:
        row_id = row.id
        corpus.predict_latency(row, catalog)
        sim.replay_row(row, catalog, clients.get(row.id, sim.Client()), True)
    assert len(closed) == len(rows) and closed == replayed
    # The client file's old column (kept: the file is append-only, no longer read) agrees.
    with (corpus.DATA / "latency_client.csv").open(newline="") as f:
        old = {
            r["id"]: int(r["max_num_batched_tokens"])
            for r in csv.DictReader(f)
            if r["max_num_batched_tokens"]
        }
    assert old and all(closed[i] == budget for i, budget in old.items())
    assert {closed[i] for i in old} == {20000}


def test_aiconfigurator_rows_lie_between_a_steady_and_a_lockstep_closed_loop() -> None:
    """The finding of branch ttftload: AIConfigurator's Qwen3-32B rows (vLLM 0.12 on H100s; the
    client is in a private project) measure TTFTs above the scheduler replayed with the users'
    first requests spread over a request's duration (a steady closed loop) and below the same
    replay with the users starting together and fixed lengths (lockstep cohorts), so their
    under-prediction fits partial cohorts, which the client's unpublished start and lengths
    would decide."""
    catalog = load_catalog()
    rows = [r for r in corpus.load_latency() if r.id.startswith("aic-")]
    assert len(rows) == 8
    for row in rows:
        steady = sim.replay_row(row, catalog, sim.Client(), True).ttft_ms
        lockstep = sim.replay_row(row, catalog, sim.Client(together=True), True).ttft_ms
        assert steady < row.ttft_ms < lockstep, row.id
