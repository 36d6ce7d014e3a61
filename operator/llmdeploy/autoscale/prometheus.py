"""The Prometheus edge: read the engines' metrics for one LLMDeployment.

Anything missing, stale, non-finite or unreachable becomes None, which the decision core
treats as "hold": a dead Prometheus must never scale a fleet down.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests import RequestException
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from llmdeploy.autoscale.decision import MetricsReading

# A sample older than this is not a current reading.
MAX_SAMPLE_AGE_S = 120.0


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    url: str
    timeout_s: float = 5.0
    bearer_token_file: Path | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    # All the queries of one reading (an autoscaler tick, a measurement) end within this.
    reading_timeout_s: float = math.inf


# Bytes of one answer at most: a vector of one series is a few hundred.
MAX_ANSWER_BYTES = 1 << 20
READ_CHUNK = 65536


class DeadlineSession(requests.Session):
    """A session whose every request, retries included, ends within `deadline_s` and by
    `until` (time.monotonic()): requests' own timeout bounds each socket read, so a server
    that sends a byte every few seconds would hold a reconcile for ever. The body is read one
    socket read at a time against the deadline, and no more than MAX_ANSWER_BYTES of it."""

    def __init__(self, deadline_s: float, until: float = math.inf) -> None:
        super().__init__()
        self.deadline_s = deadline_s
        self.until = until

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        now = time.monotonic()
        deadline = min(now + self.deadline_s, self.until)
        left = deadline - now
        if left <= 0:
            raise OutOfTime("no time left to ask")
        kwargs.update(stream=True, timeout=(left, left))
        response = super().request(method, url, *args, **kwargs)
        body = bytearray()
        try:
            while chunk := response.raw.read1(READ_CHUNK, decode_content=True):
                body += chunk
                if time.monotonic() > deadline:
                    raise requests.Timeout(f"no whole answer within {self.deadline_s:g}s")
                if len(body) > MAX_ANSWER_BYTES:
                    raise ValueError(f"an answer larger than {MAX_ANSWER_BYTES} bytes")
        finally:
            response.close()
        response._content = bytes(body)
        return response


class OutOfTime(requests.Timeout):
    """Not asked: the reading's or the reconcile's time had run out (not the endpoint's
    fault, so it is not backed off)."""


class TokenFileError(ValueError):
    """The bearer token file is empty or holds more than one word (never quoted: a token
    with a newline in it is still a secret)."""


def client_for(config: PrometheusConfig, until: float = math.inf) -> PrometheusConnect:
    headers = {}
    if config.bearer_token_file is not None:
        token = config.bearer_token_file.read_text(encoding="utf-8").strip()
        if not token or any(c.isspace() for c in token):
            raise TokenFileError("the bearer token file holds no single token")
        headers["Authorization"] = f"Bearer {token}"
    session = DeadlineSession(config.timeout_s, until)
    session.verify = not config.insecure_skip_verify
    if session.verify and config.ca_file is not None:
        session.verify = str(config.ca_file)
    return PrometheusConnect(
        url=config.url,
        headers=headers or None,
        session=session,
        # One retry of a refused connection or a 5xx, within the same deadline.
        retry=Retry(total=1, read=0, backoff_factor=0.1, status_forcelist=(502, 503, 504)),
    )


# Everything a query can raise short of a bug: transport and TLS errors, non-200 answers,
# malformed bodies, an unreadable token or CA file.
QUERY_ERRORS = (RequestException, PrometheusApiClientException, ValueError, KeyError, OSError)
# Of those, the ones that say Prometheus is not answering at all (not one query's problem).
UNREACHABLE = (requests.ConnectionError, requests.Timeout)


class Backoff:
    """Endpoints (by URL) that did not answer in time, or at all, are not asked again for
    `seconds`: a reading meanwhile gets the same reason at once. Then one reading asks again
    while the others still get it. Without this, every object naming a slow endpoint would
    hold a worker for a deadline per reading, and a few of them would starve all the others."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._resting: dict[str, tuple[float, str]] = {}  # url -> (until, why)

    def resting(self, url: str, probe_s: float) -> str | None:
        """Why `url` is not to be asked now, or None: ask it (others wait `probe_s` then)."""
        now = time.monotonic()
        with self._lock:
            until, why = self._resting.get(url, (-math.inf, ""))
            if now < until:
                return why
            if why:
                self._resting[url] = (now + probe_s, why)
            return None

    def failed(self, url: str, why: str) -> None:
        with self._lock:
            self._resting[url] = (time.monotonic() + self.seconds, why)

    def answered(self, url: str) -> None:
        with self._lock:
            self._resting.pop(url, None)


# An answer that took more than this share of the deadline says the endpoint is too slow:
# it is used, and the endpoint asked nothing more until its rest is over.
SLOW_SHARE = 0.5
TOO_SLOW = "too slow: an answer took over half the deadline"


class Reading:
    """The queries of one reading from one endpoint: each within the endpoint's deadline,
    all of them by `until` (time.monotonic(): the reconcile's bound) and within the reading's
    timeout. Once a query found the endpoint unreachable (no answer in time, no connection)
    or too slow, or it rests in `backoff`, the rest are not asked and get the same reason: a
    slow endpoint costs a reading one deadline, not one per query."""

    def __init__(
        self,
        config: PrometheusConfig,
        until: float = math.inf,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.backoff = backoff
        self.stopped: str | None = None  # why nothing more is asked
        self.client: PrometheusConnect | None = None
        until = min(until, time.monotonic() + config.reading_timeout_s)
        try:
            self.client = client_for(config, until)
        except (OSError, ValueError) as exc:
            self.stopped = describe_error(exc)

    def ask(
        self, call: Callable[..., object], *args: object, **kwargs: object
    ) -> tuple[object, str | None]:
        """(the answer of `call`, a PrometheusConnect method, to *args, **kwargs, None) or
        (None, why there is none)."""
        url = self.config.url
        if self.stopped is None and self.backoff is not None:
            self.stopped = self.backoff.resting(url, self.config.timeout_s)
        if self.stopped is not None or self.client is None:
            return None, self.stopped
        asked = time.monotonic()
        try:
            result = call(self.client, *args, **kwargs)
        except QUERY_ERRORS as exc:
            why = describe_error(exc)
            if isinstance(exc, UNREACHABLE):
                self.stopped = why
                if self.backoff is not None and not isinstance(exc, OutOfTime):
                    self.backoff.failed(url, why)
            elif self.backoff is not None:
                self.backoff.answered(url)
            return None, why
        if time.monotonic() - asked > self.config.timeout_s * SLOW_SHARE:
            self.stopped = TOO_SLOW
            if self.backoff is not None:
                self.backoff.failed(url, TOO_SLOW)
        elif self.backoff is not None:
            self.backoff.answered(url)
        return result, None


def read_queries(
    config: PrometheusConfig,
    queries: dict[str, str],
    now: float | None = None,
    *,
    until: float = math.inf,
    backoff: Backoff | None = None,
) -> MetricsReading:
    """{key: value of its PromQL, or None}; a query must give one series. The first error
    is kept as the problem, so a status can say why there is no data."""
    now = time.time() if now is None else now
    reading = Reading(config, until, backoff)
    values: dict[str, float | None] = {}
    problem = None
    for key, promql in queries.items():
        result, why = reading.ask(PrometheusConnect.custom_query, promql)
        problem = problem or why
        values[key] = None if why is not None else _single_value(result, now)
    return MetricsReading(values, problem)


def describe_error(exc: Exception) -> str:
    """What failed, in words of our own: nothing the server sent (a body, a header) and no
    exception text, which can quote them, reaches status, events or logs."""
    if isinstance(exc, TokenFileError):
        return str(exc)
    if isinstance(exc, PrometheusApiClientException):
        status = re.match(r"HTTP Status Code (\d{3})", str(exc))
        return f"HTTP {status.group(1)}" if status else "an unexpected answer"
    if isinstance(exc, requests.exceptions.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return "TLS: certificate verification failed (CERTIFICATE_VERIFY_FAILED)"
        return "TLS handshake failed"
    if isinstance(exc, OutOfTime):
        return "timed out: no time left in the reconcile for more queries"
    if isinstance(exc, requests.Timeout) or _read_timed_out(exc):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    if isinstance(exc, OSError) and not isinstance(exc, RequestException):
        return "the token or CA file could not be read"
    return f"a malformed answer ({type(exc).__name__})"


def _read_timed_out(exc: Exception) -> bool:
    """Whether urllib3 gave up waiting for an answer (its retry policy allows no reads, so
    requests reports that as a failed connection)."""
    cause = exc.args[0] if isinstance(exc, requests.ConnectionError) and exc.args else None
    return isinstance(getattr(cause, "reason", None), ReadTimeoutError)


def _single_value(result: object, now: float) -> float | None:
    if not isinstance(result, list) or len(result) != 1:
        return None  # no series: the engines are not scraped (or not there)
    sample = result[0].get("value") if isinstance(result[0], dict) else None
    if not isinstance(sample, list) or len(sample) != 2:
        return None
    timestamp, raw = sample
    try:
        value = float(raw)
        age = now - float(timestamp)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or age > MAX_SAMPLE_AGE_S:
        return None
    return value
