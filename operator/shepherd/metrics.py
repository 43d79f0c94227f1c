"""The operator's /metrics: its own health, every Release's rollouts, and DORA metrics."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["namespace", "release"]
        self.phase = Gauge(
            "shepherd_release_phase",
            "1 for the phase the Release is in, 0 for the others",
            [*labels, "phase"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "shepherd_phase_transitions_total", "Phases entered", [*labels, "phase"], registry=self.registry
        )
        self.revisions = Counter(
            "shepherd_revisions_total", "Revision attempts started", labels, registry=self.registry
        )
        self.deployments = Counter(
            "shepherd_deployments_total",
            "Revisions that reached Succeeded (DORA deployment frequency: its rate)",
            labels,
            registry=self.registry,
        )
        self.rollbacks = Counter(
            "shepherd_rollbacks_total",
            "Revisions rolled back, by reason",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.change_failure = Gauge(
            "shepherd_change_failure_ratio",
            "DORA change failure rate: rollbacks over revision attempts since the operator started",
            labels,
            registry=self.registry,
        )
        self.rollout_duration = Histogram(
            "shepherd_rollout_duration_seconds",
            "From a revision's start to its end, by result",
            [*labels, "result"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.lead_time = Histogram(
            "shepherd_lead_time_seconds",
            "DORA lead time for changes: shepherd.dev/committed-at to Succeeded",
            labels,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.restore_time = Histogram(
            "shepherd_time_to_restore_seconds",
            "DORA time to restore: failure detected (RollingBack) to RolledBack",
            labels,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.measurements = Counter(
            "shepherd_analysis_measurements_total",
            "Analysis measurements, by result",
            [*labels, "metric", "result"],
            registry=self.registry,
        )
        self.analysis_value = Gauge(
            "shepherd_analysis_value",
            "The latest value the operator measured, per metric and role",
            [*labels, "metric", "role"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "shepherd_notifications_total",
            "Webhook notifications, by result: delivered, or failed once its retries ran out",
            [*labels, "result"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "shepherd_reconcile_duration_seconds",
            "Time one reconcile took, queries and writes included",
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "shepherd_reconcile_errors_total",
            "Reconciles that failed and were retried",
            registry=self.registry,
        )
        self.leader = Gauge(
            "shepherd_leader",
            "1 while this operator acts: it holds the leader lease, or runs without leader election",
            registry=self.registry,
        )
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def record(self, namespace: str, release: str, observed: Observed) -> None:
        key = (namespace, release)
        if observed.phase is not None:
            for phase in Phase:
                self.phase.labels(namespace, release, phase.value).set(int(phase.value == observed.phase))
        for entered in observed.entered:
            self.transitions.labels(namespace, release, entered).inc()
        if observed.revisions_started:
            self.revisions.labels(namespace, release).inc(observed.revisions_started)
        if observed.deployed:
            self.deployments.labels(namespace, release).inc(observed.deployed)
        for reason in observed.rollbacks:
            self.rollbacks.labels(namespace, release, reason).inc()
        for result, seconds in observed.rollout_seconds:
            self.rollout_duration.labels(namespace, release, result).observe(seconds)
        for seconds in observed.lead_time_seconds:
            self.lead_time.labels(namespace, release).observe(seconds)
        for seconds in observed.restore_seconds:
            self.restore_time.labels(namespace, release).observe(seconds)
        for metric, result in observed.measurements:
            self.measurements.labels(namespace, release, metric, result).inc()
        for (metric, role), value in observed.latest_values.items():
            self.analysis_value.labels(namespace, release, metric, role).set(value)
        with self._lock:
            started, failed = self._counts.get(key, (0, 0))
            started, failed = started + observed.revisions_started, failed + len(observed.rollbacks)
            self._counts[key] = (started, failed)
        if started:
            self.change_failure.labels(namespace, release).set(failed / started)

    def serve(self, port: int, address: str = "0.0.0.0") -> WSGIServer:
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server
