"""The operator's /metrics: its own health, every Release's rollouts, and DORA metrics.

The per-Release series are kept as plain numbers in dicts and rendered when scraped (a custom collector):
a labelled child of prometheus_client costs a lock and an object per series, some 17 KiB per Release for
these families, where a number in a dict costs a few dozen bytes.
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as CounterMetric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from shepherd.core.status import Phase
from shepherd.telemetry import Observed

DURATION_BUCKETS = (
    1,
    5,
    15,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    14400,
    43200,
    86400,
    float("inf"),
)


Labels = tuple[str, ...]
RELEASE = ("namespace", "release")


class ByRelease:
    """One family's numbers by Release, then by its other labels: a Release is forgotten in one step."""

    def __init__(self) -> None:
        self.values: dict[Labels, dict[Labels, float]] = {}

    def add(self, release: Labels, rest: Labels, amount: float = 1) -> None:
        values = self.values.setdefault(release, {})
        values[rest] = values.get(rest, 0) + amount

    def set(self, release: Labels, rest: Labels, value: float) -> None:
        self.values.setdefault(release, {})[rest] = value

    def items(self) -> Iterator[tuple[Labels, float]]:
        for release, values in self.values.items():
            for rest, value in values.items():
                yield (*release, *rest), value

    def forget(self, release: Labels) -> None:
        self.values.pop(release, None)


@dataclass
class Histograms:
    """Cumulative histograms by Release and other labels: bucket counts, sum and count, as Prometheus
    exposes them."""

    bounds: Sequence[float]
    counts: dict[Labels, dict[Labels, list[int]]] = field(default_factory=dict)
    sums: dict[Labels, dict[Labels, float]] = field(default_factory=dict)

    def observe(self, release: Labels, rest: Labels, value: float) -> None:
        counts = self.counts.setdefault(release, {}).setdefault(rest, [0] * len(self.bounds))
        counts[bisect.bisect_left(self.bounds, value)] += 1
        sums = self.sums.setdefault(release, {})
        sums[rest] = sums.get(rest, 0.0) + value

    def family(self, name: str, documentation: str, label_names: Sequence[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=label_names)
        for release, by_rest in self.counts.items():
            for rest, counts in by_rest.items():
                cumulative, buckets = 0, []
                for bound, count in zip(self.bounds, counts, strict=True):
                    cumulative += count
                    buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
                family.add_metric([*release, *rest], buckets, self.sums[release][rest])
        return family

    def forget(self, release: Labels) -> None:
        self.counts.pop(release, None)
        self.sums.pop(release, None)


class ReleaseSeries(Collector):
    """Every per-Release family, from plain dicts. Those with labels beyond the Release's are kept by
    Release first, so that a Release gone is forgotten without a look at the others'."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phases: dict[Labels, str] = {}
        self.transitions = ByRelease()
        self.revisions: collections.Counter[Labels] = collections.Counter()
        self.deployments: collections.Counter[Labels] = collections.Counter()
        self.rollbacks = ByRelease()
        self.failures: collections.Counter[Labels] = collections.Counter()  # rollbacks of each Release
        self.change_failure: dict[Labels, float] = {}
        self.rollout_duration = Histograms(DURATION_BUCKETS)
        self.lead_time = Histograms(DURATION_BUCKETS)
        self.restore_time = Histograms(DURATION_BUCKETS)
        self.measurements = ByRelease()
        self.analysis_value = ByRelease()
        self.notifications = ByRelease()

    def forget(self, release: Labels) -> None:
        with self.lock:
            for flat in (self.phases, self.revisions, self.deployments, self.failures, self.change_failure):
                flat.pop(release, None)
            for nested in (
                self.transitions,
                self.rollbacks,
                self.measurements,
                self.analysis_value,
                self.notifications,
                self.rollout_duration,
                self.lead_time,
                self.restore_time,
            ):
                nested.forget(release)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        with self.lock:
            phase = GaugeMetricFamily(
                "shepherd_release_phase",
                "1 for the phase the Release is in, 0 for the others",
                labels=[*RELEASE, "phase"],
            )
            for labels, current in self.phases.items():
                for each in Phase:
                    phase.add_metric([*labels, each.value], float(each.value == current))
            yield phase
            yield counters(
                "shepherd_phase_transitions", "Phases entered", [*RELEASE, "phase"], self.transitions.items()
            )
            yield counters("shepherd_revisions", "Revision attempts started", RELEASE, self.revisions.items())
            yield counters(
                "shepherd_deployments",
                "Revisions that reached Succeeded (DORA deployment frequency: its rate)",
                RELEASE,
                self.deployments.items(),
            )
            yield counters(
                "shepherd_rollbacks",
                "Revisions rolled back, by reason",
                [*RELEASE, "reason"],
                self.rollbacks.items(),
            )
            yield gauges(
                "shepherd_change_failure_ratio",
                "DORA change failure rate: rollbacks over revision attempts since the operator started",
                RELEASE,
                self.change_failure.items(),
            )
            yield self.rollout_duration.family(
                "shepherd_rollout_duration_seconds",
                "From a revision's start to its end, by result",
                [*RELEASE, "result"],
            )
            yield self.lead_time.family(
                "shepherd_lead_time_seconds",
                "DORA lead time for changes: shepherd.dev/committed-at to Succeeded",
                RELEASE,
            )
            yield self.restore_time.family(
                "shepherd_time_to_restore_seconds",
                "DORA time to restore: failure detected (RollingBack) to RolledBack",
                RELEASE,
            )
            yield counters(
                "shepherd_analysis_measurements",
                "Analysis measurements, by result",
                [*RELEASE, "metric", "result"],
                self.measurements.items(),
            )
            yield gauges(
                "shepherd_analysis_value",
                "The latest value the operator measured, per metric and role",
                [*RELEASE, "metric", "role"],
                self.analysis_value.items(),
            )
            yield counters(
                "shepherd_notifications",
                "Webhook notifications, by result: delivered, or failed once its retries ran out",
                [*RELEASE, "result"],
                self.notifications.items(),
            )


def counters(
    name: str, documentation: str, label_names: Sequence[str], values: Iterable[tuple[Labels, float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=label_names)
    for labels, value in values:
        family.add_metric(list(labels), value)
    return family


def gauges(
    name: str, documentation: str, label_names: Sequence[str], values: Iterable[tuple[Labels, float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=label_names)
    for labels, value in values:
        family.add_metric(list(labels), value)
    return family


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.releases = ReleaseSeries()
        self.registry.register(self.releases)
        self.reconcile_duration = Histogram(
            "shepherd_reconcile_duration_seconds",
            "Time one reconcile took, queries and writes included",
            registry=self.registry,
        )
        self.reconcile_errors = CounterMetric(
            "shepherd_reconcile_errors_total",
            "Reconciles that failed and were retried",
            registry=self.registry,
        )
        self.reconcile_skipped = CounterMetric(
            "shepherd_reconcile_skipped_total",
            "Reconciles that found nothing they decide on changed and nothing due, so decided nothing again",
            registry=self.registry,
        )
        self.leader = Gauge(
            "shepherd_leader",
            "1 while this operator acts: it holds the leader lease, or runs without leader election",
            registry=self.registry,
        )

    def record(self, namespace: str, release: str, observed: Observed) -> None:
        key = (namespace, release)
        series = self.releases
        with series.lock:
            if observed.phase is not None:
                series.phases[key] = observed.phase
            for entered in observed.entered:
                series.transitions.add(key, (entered,))
            if observed.revisions_started:
                series.revisions[key] += observed.revisions_started
            if observed.deployed:
                series.deployments[key] += observed.deployed
            for reason in observed.rollbacks:
                series.rollbacks.add(key, (reason,))
                series.failures[key] += 1
            for result, seconds in observed.rollout_seconds:
                series.rollout_duration.observe(key, (result,), seconds)
            for seconds in observed.lead_time_seconds:
                series.lead_time.observe(key, (), seconds)
            for seconds in observed.restore_seconds:
                series.restore_time.observe(key, (), seconds)
            for metric, result in observed.measurements:
                series.measurements.add(key, (metric, result))
            for (metric, role), value in observed.latest_values.items():
                series.analysis_value.set(key, (metric, role), value)
            started = series.revisions.get(key, 0)
            if started:
                series.change_failure[key] = series.failures[key] / started

    def notified(self, namespace: str, release: str, result: str) -> None:
        key = (namespace, release)
        with self.releases.lock:
            # A notification is sent after a status write, whose phase is recorded: without one, the
            # Release was forgotten while its notification was on its way.
            if key in self.releases.phases:
                self.releases.notifications.add(key, (result,))

    def forget(self, namespace: str, release: str) -> None:
        """A Release gone: /metrics no longer names it."""
        self.releases.forget((namespace, release))

    def serve(self, port: int, address: str = "0.0.0.0") -> WSGIServer:
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server
