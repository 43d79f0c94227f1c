"""A tiny application exporter whose traffic the caller dictates, for tests and `shepherd demo`.

Per series key it serves the two metrics canary analysis usually asks about:

    http_requests_total{namespace, release, component, version, role, code}       counter
    http_request_duration_seconds{namespace, release, component, version, role}    histogram

A ticker adds `rps * elapsed` requests every 100ms, so `rate()` sees steady traffic. The counts are
floats: at any rps the error ratio and the mean latency Prometheus computes are exact, which lets
tests compare with what they set instead of guessing a tolerance.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

TICK_SECONDS = 0.1
KEY_LABELS = ("namespace", "release", "component", "version", "role")
BUCKETS: tuple[float, ...] = tuple(Histogram.DEFAULT_BUCKETS)  # ends with +Inf
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_LABELS = frozenset({*KEY_LABELS, "code", "le"})


@dataclass(frozen=True)
class SeriesKey:
    """One application instance; label values may hold any text, `extra_labels` add more labels."""

    namespace: str
    release: str
    component: str
    version: str
    role: str
    extra_labels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name, _ in self.extra_labels:
            if not _LABEL_NAME.match(name) or name.startswith("__") or name in _RESERVED_LABELS:
                raise ValueError(f"{name!r} cannot be an extra label name")

    def labels(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "release": self.release,
            "component": self.component,
            "version": self.version,
            "role": self.role,
            **dict(self.extra_labels),
        }


@dataclass
class _Traffic:
    rps: float = 0.0
    error_ratio: float = 0.0
    latency_seconds: float = 0.0
    ok_requests: float = 0.0
    failed_requests: float = 0.0
    latency_sum: float = 0.0
    bucket_counts: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))

    def serve(self, seconds: float) -> None:
        requests = self.rps * seconds
        self.failed_requests += requests * self.error_ratio
        self.ok_requests += requests * (1.0 - self.error_ratio)
        self.latency_sum += requests * self.latency_seconds
        for index, upper_bound in enumerate(BUCKETS):
            if self.latency_seconds <= upper_bound:
                self.bucket_counts[index] += requests

    def request_samples(self, labels: dict[str, str]) -> list[Sample]:
        return [
            Sample("http_requests_total", {**labels, "code": "200"}, self.ok_requests),
            Sample("http_requests_total", {**labels, "code": "500"}, self.failed_requests),
        ]

    def duration_samples(self, labels: dict[str, str]) -> list[Sample]:
        name = "http_request_duration_seconds"
        buckets = [
            Sample(f"{name}_bucket", {**labels, "le": floatToGoString(upper_bound)}, count)  # type: ignore[no-untyped-call]
            for upper_bound, count in zip(BUCKETS, self.bucket_counts, strict=True)
        ]
        return [
            *buckets,
            Sample(f"{name}_count", labels, self.bucket_counts[-1]),
            Sample(f"{name}_sum", labels, self.latency_sum),
        ]


class _TrafficBook:
    """The traffic of every key, and the collector that turns it into metrics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.traffic: dict[SeriesKey, _Traffic] = {}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("http_requests_total", "HTTP requests served, by status code")
        durations = HistogramMetricFamily("http_request_duration_seconds", "HTTP request latency")
        with self.lock:
            for key, traffic in self.traffic.items():
                # Samples carry their own labels: keys may differ in their extra labels.
                requests.samples.extend(traffic.request_samples(key.labels()))
                durations.samples.extend(traffic.duration_samples(key.labels()))
        yield requests
        yield durations

    def serve(self, seconds: float) -> None:
        with self.lock:
            for traffic in self.traffic.values():
                traffic.serve(seconds)


class TrafficExporter:
    """`with TrafficExporter() as exporter: exporter.set_traffic(key, rps=20, error_ratio=0.05)`.

    Prometheus scrapes `exporter.target` (host:port); every method is thread-safe.
    """

    def __init__(self) -> None:
        self._book = _TrafficBook()
        self._registry = CollectorRegistry()
        self._registry.register(self._book)
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick_until_stopped, name="traffic-ticker", daemon=True)
        self._server, self._server_thread = start_http_server(0, addr="127.0.0.1", registry=self._registry)
        self._ticker.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def __enter__(self) -> TrafficExporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()
        self._ticker.join()
        self._server.shutdown()
        self._server.server_close()
        self._server_thread.join()

    def set_traffic(
        self, key: SeriesKey, *, rps: float, error_ratio: float = 0.0, latency_seconds: float = 0.05
    ) -> None:
        """From now on serve `rps` requests a second, `error_ratio` of them with code 500, all this slow."""
        if not (math.isfinite(rps) and rps >= 0):
            raise ValueError(f"rps must be a finite number >= 0, not {rps}")
        if not 0.0 <= error_ratio <= 1.0:
            raise ValueError(f"error_ratio must be within 0..1, not {error_ratio}")
        if not (math.isfinite(latency_seconds) and latency_seconds >= 0):
            raise ValueError(f"latency_seconds must be a finite number >= 0, not {latency_seconds}")
        with self._book.lock:
            traffic = self._book.traffic.setdefault(key, _Traffic())
            traffic.rps, traffic.error_ratio, traffic.latency_seconds = rps, error_ratio, latency_seconds

    def stop_traffic(self, key: SeriesKey) -> None:
        """No more requests; the series stay, frozen, as for an idle instance."""
        with self._book.lock:
            if key in self._book.traffic:
                self._book.traffic[key].rps = 0.0

    def remove(self, key: SeriesKey) -> None:
        """The series vanish from the next scrape, as when the instance is gone."""
        with self._book.lock:
            self._book.traffic.pop(key, None)

    def reset(self) -> None:
        """Remove every key."""
        with self._book.lock:
            self._book.traffic.clear()

    def _tick_until_stopped(self) -> None:
        last = time.monotonic()
        while not self._stopping.wait(TICK_SECONDS):
            now = time.monotonic()
            # The time actually elapsed, not the nominal tick: a late tick must not slow the traffic down.
            self._book.serve(now - last)
            last = now
