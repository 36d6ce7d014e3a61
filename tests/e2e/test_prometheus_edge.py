"""The Prometheus edge (autoscale/prometheus.py) against a real Prometheus serving https with
a throwaway CA, and against a loopback server for the bearer token. No control plane."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmdeploy.api.types import EngineName
from llmdeploy.autoscale.decision import MetricsReading
from llmdeploy.autoscale.prometheus import PrometheusConfig, read_queries
from llmdeploy.autoscale.promql import query

from .prometheus_harness import Prometheus, SlowDripServer, VllmMetricsSim, throwaway_pki

LABELS = {"namespace": "team-a", "llmdeploy_io_deployment": "llama"}


def read(config: PrometheusConfig) -> MetricsReading:
    promql = query("runningRequests", "team-a", "llama", EngineName.VLLM)
    return read_queries(config, {"runningRequests": promql})


@pytest.fixture(scope="module")
def tls_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Path]]:
    sim = VllmMetricsSim()
    sim.set_load(running=5, waiting=0)
    tls = throwaway_pki(tmp_path_factory.mktemp("pki"))
    prometheus = Prometheus(sim.port, LABELS, tls=tls)
    prometheus.start()
    try:
        yield prometheus, tls.ca_file
    finally:
        prometheus.close()
        sim.close()


def test_https_with_the_ca_reads_the_metrics(tls_prometheus: tuple[Prometheus, Path]) -> None:
    prometheus, ca = tls_prometheus
    assert prometheus.url.startswith("https://")
    config = PrometheusConfig(prometheus.url, ca_file=ca)
    deadline = time.monotonic() + 30
    while (reading := read(config)).values["runningRequests"] is None:
        assert time.monotonic() < deadline, reading.problem  # first scrape within a second
        time.sleep(0.5)
    assert reading.values == {"runningRequests": 5.0} and reading.problem is None


def test_https_without_the_ca_fails_and_says_why(tls_prometheus: tuple[Prometheus, Path]) -> None:
    prometheus, _ = tls_prometheus
    reading = read(PrometheusConfig(prometheus.url))  # the system trust store only
    assert reading.values == {"runningRequests": None}  # the decision holds
    assert reading.problem is not None and "CERTIFICATE_VERIFY_FAILED" in reading.problem


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_insecure_skips_verification(tls_prometheus: tuple[Prometheus, Path]) -> None:
    prometheus, _ = tls_prometheus
    config = PrometheusConfig(prometheus.url, insecure_skip_verify=True)
    deadline = time.monotonic() + 30
    while (reading := read(config)).values["runningRequests"] is None:
        assert time.monotonic() < deadline, reading.problem
        time.sleep(0.5)
    assert reading.values == {"runningRequests": 5.0}


# Prometheus itself does not check bearer tokens (that is a proxy's job in front of it), so the
# header is checked by this loopback stand-in for the query API, not by a real component.
class TokenCheckingApi(BaseHTTPRequestHandler):
    token = "s3cret-token"

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"metric": {}, "value": [time.time(), "7"]}],
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_bearer_token_is_sent_and_a_refusal_is_reported(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenCheckingApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        token_file = tmp_path / "token"
        token_file.write_text(TokenCheckingApi.token + "\n")  # as a mounted Secret may end
        reading = read(PrometheusConfig(url, bearer_token_file=token_file))
        assert reading.values == {"runningRequests": 7.0} and reading.problem is None
        refused = read(PrometheusConfig(url))
        assert refused.values == {"runningRequests": None}
        assert refused.problem is not None and "401" in refused.problem
    finally:
        server.shutdown()
        server.server_close()


def test_a_slow_drip_answer_ends_at_the_deadline_and_says_only_that() -> None:
    server = SlowDripServer(gap_s=0.5)  # each socket read succeeds in time
    config = PrometheusConfig(server.url, timeout_s=1.5)
    readings: list[MetricsReading] = []
    try:
        reader = threading.Thread(target=lambda: readings.append(read(config)), daemon=True)
        reader.start()
        reader.join(timeout=60)  # without a deadline it would never end
        assert readings, "the query did not end"
        assert readings[0].values == {"runningRequests": None}
        assert readings[0].problem == "timed out"
    finally:
        server.close()
