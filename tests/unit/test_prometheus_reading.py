"""One reading's queries against a slow endpoint (autoscale/prometheus.py's Reading and
Backoff): asked until the first runs out its deadline, within the reading's and the reconcile's
time, and not asked again while the endpoint rests. Loopback stand-ins (the e2e tests' drip
among them) count the requests."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest

from llmdeploy.api.types import EngineName
from llmdeploy.autoscale import prometheus as module
from llmdeploy.autoscale.prometheus import Backoff, PrometheusConfig, read_queries
from llmdeploy.measure.prometheus import collect
from llmdeploy.measure.queries import measurement_queries
from tests.e2e.prometheus_harness import SlowAnswerServer, SlowDripServer

QUERIES = {f"q{n}": "up" for n in range(5)}


@pytest.fixture
def drip() -> Iterator[SlowDripServer]:
    endpoint = SlowDripServer(gap_s=0.1)
    yield endpoint
    endpoint.close()


def test_a_drip_is_asked_once_per_reading_and_not_again_while_it_rests(
    drip: SlowDripServer,
) -> None:
    config = PrometheusConfig(drip.url, timeout_s=0.3)
    backoff = Backoff(seconds=3600)
    reading = read_queries(config, QUERIES, backoff=backoff)
    assert reading.values == dict.fromkeys(QUERIES) and reading.problem == "timed out"
    assert drip.requests == 1
    # Resting: every reading of it says the same at once, the measurement's too.
    again = read_queries(config, QUERIES, backoff=backoff)
    assert again.problem == "timed out"
    queries = measurement_queries("ns", "m", EngineName.VLLM, 60)
    instant, _ = collect(config, queries, 0.0, backoff=backoff)
    assert {r.error for r in instant.values()} == {"timed out"}
    assert drip.requests == 1


def test_after_the_rest_one_reading_probes_while_the_others_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    backoff = Backoff(seconds=30)
    backoff.failed("http://p", "timed out")
    clock[0] += 29
    assert backoff.resting("http://p", probe_s=5) == "timed out"
    clock[0] += 2
    assert backoff.resting("http://p", probe_s=5) is None  # this one asks
    assert backoff.resting("http://p", probe_s=5) == "timed out"  # the others, meanwhile
    backoff.answered("http://p")
    assert backoff.resting("http://p", probe_s=5) is None
    assert backoff.resting("http://other", probe_s=5) is None


def test_answers_each_in_time_end_at_the_reading_s_timeout() -> None:
    """Each query answered within its deadline, but slowly: the reading stops asking at its
    own timeout, and that endpoint then rests."""
    slow = SlowAnswerServer(after_s=0.2)
    try:
        config = PrometheusConfig(slow.url, timeout_s=5, reading_timeout_s=0.5)
        backoff = Backoff(seconds=3600)
        many = {f"q{n}": "up" for n in range(20)}
        reading = read_queries(config, many, backoff=backoff)
        assert reading.problem == "timed out"
        assert 1 <= slow.requests < len(many)
        asked = slow.requests
        assert read_queries(config, many, backoff=backoff).problem == "timed out"
        assert slow.requests == asked
    finally:
        slow.close()


def test_an_answer_over_half_the_deadline_is_used_and_the_endpoint_rests() -> None:
    slow = SlowAnswerServer(after_s=0.2)
    try:
        config = PrometheusConfig(slow.url, timeout_s=0.3)
        backoff = Backoff(seconds=3600)
        reading = read_queries(config, {"a": "up", "b": "up"}, backoff=backoff)
        assert reading.problem == module.TOO_SLOW and slow.requests == 1
        assert backoff.resting(slow.url, probe_s=5) == module.TOO_SLOW
        fast = PrometheusConfig(slow.url, timeout_s=5)  # 0.2 s is well within this deadline
        assert read_queries(fast, {"a": "up", "b": "up"}).problem is None
        assert slow.requests == 3
    finally:
        slow.close()


def test_nothing_is_asked_past_the_reconcile_s_bound_and_the_endpoint_is_not_blamed(
    drip: SlowDripServer,
) -> None:
    config = PrometheusConfig(drip.url, timeout_s=5)
    backoff = Backoff(seconds=3600)
    reading = read_queries(config, QUERIES, until=time.monotonic() - 1, backoff=backoff)
    assert reading.values == dict.fromkeys(QUERIES)
    assert reading.problem == "timed out: no time left in the reconcile for more queries"
    assert drip.requests == 0
    assert backoff.resting(drip.url, probe_s=5) is None


def test_without_a_reading_timeout_the_cli_s_reading_is_bounded_per_query_only() -> None:
    assert PrometheusConfig("http://p").reading_timeout_s == math.inf
