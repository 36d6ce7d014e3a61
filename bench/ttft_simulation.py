"""TTFT under load: the planner's closed form against a discrete-event replay of the scheduler.

The replay runs vLLM V1's scheduler (vllm/v1/core/sched/scheduler.py, `schedule`) on the
planner's own step costs (performance.py `StepModel`; no constant of its own):
- each step first gives every running request its tokens in order (one for a decoding
  request, the rest of its prompt up to the budget for one still prefilling), then takes
  waiting requests first come, first served into the rest of the `max_num_batched_tokens`
  budget (chunked prefill), up to `max_num_seqs` running;
- a request's first token is sampled at the end of the step that completes its prompt;
- a step of decodes only costs `StepModel.decode(b)`, one with prompt tokens
  `StepModel.mixed_step_s`;
- with async scheduling (the closed form's rule, performance.py `overlap_scheduler`: vLLM from
  0.14.0 by default, TensorRT-LLM's overlap scheduler, or the row's `--async-scheduling`) the
  step after the running one is scheduled before the running one ends, so a request reaching
  the engine during a step waits for the step after.
The client is `benchmark_serving.py` / `vllm bench serve` with `--request-rate inf` and
`--max-concurrency N`: N users in a closed loop, the first N requests sent at once, each next
one as a request completes; `num_prompts` requests (bench/data/latency_client.csv where the
source gives it, else the client's default 1000); lengths fixed, or drawn uniformly in
[int(L x ratio), L] (the InferenceMAX client's `--random-range-ratio`, kimbochen/bench_serving
benchmark_serving.py `sample_random_requests`). A request's host time (performance.py
`request_host_s`) is spent before it reaches the engine. The TTFT is the row's statistic
(median or mean) over all requests.

Run: .venv/bin/python bench/ttft_simulation.py [--rows] [--sync] [--jitter] [--together]
"""

from __future__ import annotations

import argparse
import bisect
import csv
import math
import random
import statistics
import sys
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import (
    DATA,
    LatencyRow,
    _kv_bytes,
    async_scheduling_settings,
    expert_parallel,
    latency_rules,
    latency_setup,
    load_latency,
    load_split,
    predict_latency,
    relative_error,
    summarize,
)
from llmdeploy.catalog import Catalog, load_catalog
from llmdeploy.sizing import performance
from llmdeploy.sizing.performance import StepModel, request_host_s

DEFAULT_NUM_PROMPTS = 1000  # benchmark_serving.py's --num-prompts default


@dataclass(frozen=True)
class Client:
    """The benchmark client's facts a row's CSV lacks (bench/data/latency_client.csv)."""

    together: bool = False  # the first N requests sent at once (benchmark_serving.py)
    num_prompts: int = DEFAULT_NUM_PROMPTS
    range_ratio: float = 0.0  # lengths uniform in [int(L x ratio), L]; 0: fixed
    async_scheduling: bool | None = None  # None: the release's default


def load_clients() -> dict[str, Client]:
    settings = async_scheduling_settings()
    with (DATA / "latency_client.csv").open(newline="") as f:
        return {
            r["id"]: Client(
                together=r["client"] == "benchmark_serving",
                num_prompts=int(r["num_prompts"]) if r["num_prompts"] else DEFAULT_NUM_PROMPTS,
                range_ratio=float(r["range_ratio"] or 0.0),
                async_scheduling=settings.get(r["id"]),
            )
            for r in csv.DictReader(f)
        }


@dataclass
class Request:
    """One request's lengths, progress and times (seconds from the run's start)."""

    prompt: int
    output: int
    sent: float  # by the client
    arrival: float  # at the engine, after the request's host time
    computed: int = 0  # prompt tokens prefilled
    generated: int = 0
    scheduled: float = math.nan  # start of the first step with some of its prompt
    first_token: float = math.nan  # end of the step that completed its prompt

    @property
    def ttft(self) -> float:
        return self.first_token - self.sent


def simulate(
    steps: StepModel,
    *,
    concurrency: int,
    prompts: list[int],
    outputs: list[int],
    budget: int,
    max_seqs: int,
    host_s: float,
    async_scheduling: bool,
    stagger_s: float = 0.0,
    jitter_s: float = 0.0,
) -> list[Request]:
    """Every request, in the order sent; the first `concurrency` are sent `stagger_s` apart
    (0: at once). `jitter_s`: each request's host time varies uniformly over that width
    around `host_s` (seeded, never below 0), so arrivals do not all fall at one phase of the
    steps."""
    rng = random.Random(1)
    decode_cost: dict[int, float] = {}

    def decode_s(batch: int) -> float:
        if batch not in decode_cost:
            decode_cost[batch] = steps.decode(batch).step_s
        return decode_cost[batch]

    total = len(prompts)
    sent: list[Request] = []
    pending: list[Request] = []

    def send(at: float) -> None:
        i = len(sent)
        host = max(0.0, host_s + (rng.random() - 0.5) * jitter_s)
        r = Request(prompts[i], outputs[i], at, at + host)
        sent.append(r)
        # Kept in arrival order: a jittered request may overtake one sent before it.
        bisect.insort(pending, r, key=lambda q: q.arrival)

    for i in range(min(concurrency, total)):
        send(i * stagger_s)
    waiting: deque[Request] = deque()
    running: list[Request] = []
    t = 0.0
    previous_start = 0.0  # start of the step before this one (async scheduling admits by it)
    done = 0
    while done < total:
        admit_by = previous_start if async_scheduling else t
        while pending and pending[0].arrival <= admit_by + 1e-12:
            waiting.append(pending.pop(0))
        if not running and not waiting:
            # Idle engine: the next request is scheduled as it arrives.
            t = previous_start = pending[0].arrival
            continue
        left = budget
        prefill_tokens = 0
        decoding: list[Request] = []
        completing: list[Request] = []
        for r in running:
            if left == 0:
                break
            if r.computed < r.prompt:
                n = min(r.prompt - r.computed, left)
                r.computed += n
                prefill_tokens += n
                left -= n
                if r.computed == r.prompt:
                    completing.append(r)
            else:
                decoding.append(r)
                left -= 1
        while waiting and left > 0 and len(running) < max_seqs:
            r = waiting.popleft()
            n = min(r.prompt, left)
            r.computed = n
            r.scheduled = t
            prefill_tokens += n
            left -= n
            running.append(r)
            if n == r.prompt:
                completing.append(r)
        if prefill_tokens == 0:
            # Decodes only: run to the next completion or the next admission at once.
            cost = decode_s(len(decoding))
            k = min(r.output - r.generated for r in decoding)
            if pending:
                admit_at = pending[0].arrival + (cost if async_scheduling else 0.0)
                k = min(k, max(1, math.ceil((admit_at - t) / cost - 1e-9)))
            previous_start = t + (k - 1) * cost
            t += k * cost
            generated = k
        else:
            cost = steps.mixed_step_s(prefill_tokens, len(decoding))
            previous_start = t
            t += cost
            generated = 1
        for r in decoding:
            r.generated += generated
        for r in completing:
            r.first_token = t
            r.generated = 1
        finished = [r for r in running if r.computed == r.prompt and r.generated >= r.output]
        for r in finished:
            running.remove(r)
            done += 1
            if len(sent) < total:
                send(t)
    return sent


def lengths(nominal: int, count: int, ratio: float, rng: random.Random) -> list[int]:
    if ratio <= 0:
        return [nominal] * count
    return [rng.randint(max(1, int(nominal * ratio)), nominal) for _ in range(count)]


@dataclass(frozen=True)
class Replay:
    """A row's replay: its TTFT statistic and the median of each part over the requests (ms)."""

    ttft_ms: float
    host_ms: float  # before the engine has the request
    wait_ms: float  # from then to the first step with its prompt
    prefill_ms: float  # from that step's start to its first token


def replay_row(
    row: LatencyRow,
    catalog: Catalog,
    client: Client,
    async_default: bool,
    jitter: bool = False,
) -> Replay:
    """The row replayed with its client (`async_default`: async scheduling from the release
    that made it the default, where the row does not say)."""
    # The step budget from the one source the closed form reads (latency_engine.csv).
    model, gpu, budget, max_seqs = latency_setup(row, catalog)
    # One rule with the closed form: the serving command's setting, else the release's default
    # (TensorRT-LLM's overlap scheduler admits as vLLM's async scheduling does).
    async_scheduling = performance.overlap_scheduler(
        row.engine,
        row.engine_version or None,
        gpu,
        row.tensor,
        row.pipeline,
        setting=client.async_scheduling,
    )
    if client.async_scheduling is None:
        async_scheduling = async_default and async_scheduling
    steps = StepModel(
        model,
        gpu,
        catalog.quantizations[row.quantization],
        row.tensor,
        row.pipeline,
        _kv_bytes(row.kv_dtype),
        row.input_tokens,
        row.output_tokens,
        row.engine,
        expert_parallel(row),
        model.quantized_checkpoint(row.model, row.quantization),
        async_scheduling,
        row.engine_version or None,
        latency_rules(row, model, gpu),
    )
    decode_s = steps.decode(row.concurrency).step_s
    frontend = performance.frontend_s(
        row.engine, row.engine_version or None, row.endpoint or "chat"
    )
    host = request_host_s(row.concurrency - 1, frontend, decode_s)
    # A client not known to start its users together: users in a steady closed loop, their
    # first requests spread evenly over one request's duration (the closed form's phases).
    duration = row.output_tokens * decode_s + steps.prefill_s(row.input_tokens, budget)
    together = client.together or row.load == "burst"
    rng = random.Random(0)
    prompts = lengths(row.input_tokens, client.num_prompts, client.range_ratio, rng)
    outputs = lengths(row.output_tokens, client.num_prompts, client.range_ratio, rng)
    requests = simulate(
        steps,
        concurrency=row.concurrency,
        prompts=prompts,
        outputs=outputs,
        budget=budget,
        max_seqs=max_seqs,
        host_s=host,
        async_scheduling=async_scheduling,
        stagger_s=0.0 if together else duration / row.concurrency,
        jitter_s=decode_s if jitter else 0.0,
    )
    ttfts = [r.ttft for r in requests]
    ttft = statistics.fmean(ttfts) if row.statistic == "mean" else statistics.median(ttfts)
    return Replay(
        ttft_ms=ttft * 1000,
        host_ms=host * 1000,
        wait_ms=statistics.median(r.scheduled - r.arrival for r in requests) * 1000,
        prefill_ms=statistics.median(r.first_token - r.scheduled for r in requests) * 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", action="store_true", help="also print every row")
    parser.add_argument("--sync", action="store_true", help="no async scheduling anywhere")
    parser.add_argument(
        "--jitter",
        action="store_true",
        help="host times spread over one decode step",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help=(
            "replay the rows whose client is not known to start its users together as if it"
            " did (the lockstep bound: with fixed lengths the users then stay in cohorts)"
        ),
    )
    args = parser.parse_args()
    catalog = load_catalog()
    split = load_split()
    clients = load_clients()
    errors: dict[str, list[float]] = {}
    lines = []
    for row in load_latency():
        if not row.ttft_comparable:
            continue
        client = clients.get(row.id, Client())
        known = "sent together" if client.together else "not known to be sent together"
        if args.together:
            client = replace(client, together=True)
        group = f"{known}, c {'1' if row.concurrency == 1 else '> 1'}"
        s = split[row.id]
        closed, _ = predict_latency(row, catalog)
        replay = replay_row(row, catalog, client, not args.sync, args.jitter)
        e_closed = relative_error(closed, row.ttft_ms)
        e_replay = relative_error(replay.ttft_ms, row.ttft_ms)
        for key in ("all", group):
            errors.setdefault(f"{key} | {s} | closed form", []).append(e_closed)
            errors.setdefault(f"{key} | {s} | replay", []).append(e_replay)
        lines.append(
            f"| {row.id} | {s} | {row.concurrency} | {row.input_tokens}x{row.output_tokens} "
            f"| {row.ttft_ms:g} | {closed:.1f} ({100 * e_closed:+.0f}%) "
            f"| {replay.ttft_ms:.1f} ({100 * e_replay:+.0f}%) | {replay.host_ms:.1f} "
            f"| {replay.wait_ms:.1f} | {replay.prefill_ms:.1f} |"
        )
    print("| rows | set | TTFT by | n | median abs error | p90 | max | within +-10% |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(errors, key=lambda k: (not k.startswith("all"), k)):
        summary = summarize(errors[key])
        assert summary is not None
        print(
            f"| {key} | {summary.rows} | {100 * summary.median:.1f}% "
            f"| {100 * summary.p90:.1f}% | {100 * summary.max:.1f}% "
            f"| {100 * summary.within_10:.0f}% |"
        )
    if args.rows:
        print()
        print(
            "| row | set | c | in x out | measured ms | closed form | replay "
            "| replay's host | wait (median) | prefill (median) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
