"""The per-Release series, kept as plain numbers, expose what prometheus_client's own metrics would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shepherd.core.status import Phase
from shepherd.metrics import DURATION_BUCKETS, OperatorMetrics
from shepherd.telemetry import Observed

SHOP, CART = ("shop", "api"), ("shop", "cart")


def samples(registry: CollectorRegistry, prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix) and not s.name.endswith("_created")
    }


def recorded() -> OperatorMetrics:
    metrics = OperatorMetrics()
    metrics.record(*SHOP, Observed(phase="Progressing", entered=("Progressing",), revisions_started=1))
    metrics.record(*SHOP, Observed(phase="RollingBack", entered=("RollingBack",), rollbacks=("Aborted",)))
    metrics.record(*SHOP, Observed(phase="RolledBack", rollout_seconds=(("RolledBack", 42.0),)))
    metrics.record(*SHOP, Observed(revisions_started=1, restore_seconds=(7.5,)))
    metrics.record(*SHOP, Observed(phase="Succeeded", deployed=1, lead_time_seconds=(5400.0,)))
    metrics.record(*CART, Observed(phase="Baking", measurements=(("errors", "Passed"),)))
    metrics.record(*CART, Observed(latest_values={("errors", "canary"): 0.25}))
    metrics.notified(*CART, "failed")
    return metrics


def library_equivalent() -> CollectorRegistry:
    """The same observations through prometheus_client's labelled metrics."""
    registry = CollectorRegistry()
    labels = ["namespace", "release"]
    phase = Gauge("shepherd_release_phase", "", [*labels, "phase"], registry=registry)
    for release, current in ((SHOP, "Succeeded"), (CART, "Baking")):
        for each in Phase:
            phase.labels(*release, each.value).set(int(each.value == current))
    transitions = Counter("shepherd_phase_transitions", "", [*labels, "phase"], registry=registry)
    transitions.labels(*SHOP, "Progressing").inc()
    transitions.labels(*SHOP, "RollingBack").inc()
    Counter("shepherd_revisions", "", labels, registry=registry).labels(*SHOP).inc(2)
    Counter("shepherd_deployments", "", labels, registry=registry).labels(*SHOP).inc()
    Counter("shepherd_rollbacks", "", [*labels, "reason"], registry=registry).labels(*SHOP, "Aborted").inc()
    Gauge("shepherd_change_failure_ratio", "", labels, registry=registry).labels(*SHOP).set(0.5)
    for name, extra, value in (
        ("shepherd_rollout_duration_seconds", ("RolledBack",), 42.0),
        ("shepherd_lead_time_seconds", (), 5400.0),
        ("shepherd_time_to_restore_seconds", (), 7.5),
    ):
        names = [*labels, "result"] if extra else labels
        histogram = Histogram(name, "", names, buckets=DURATION_BUCKETS, registry=registry)
        histogram.labels(*SHOP, *extra).observe(value)
    measured = Counter("shepherd_analysis_measurements", "", [*labels, "metric", "result"], registry=registry)
    measured.labels(*CART, "errors", "Passed").inc()
    value = Gauge("shepherd_analysis_value", "", [*labels, "metric", "role"], registry=registry)
    value.labels(*CART, "errors", "canary").set(0.25)
    notifications = Counter("shepherd_notifications", "", [*labels, "result"], registry=registry)
    notifications.labels(*CART, "failed").inc()
    return registry


def test_every_per_release_series_is_what_prometheus_client_would_expose() -> None:
    ours = samples(recorded().registry, "shepherd_")
    theirs = samples(library_equivalent(), "shepherd_")
    own_health = {k: v for k, v in ours.items() if k[0].startswith(("shepherd_reconcile", "shepherd_leader"))}
    assert {k: v for k, v in ours.items() if k not in own_health} == theirs


def test_a_release_without_revisions_exposes_no_revision_or_failure_series() -> None:
    metrics = OperatorMetrics()
    metrics.record(*SHOP, Observed(phase="Pending"))
    names = {name for name, _ in samples(metrics.registry, "shepherd_")}
    assert "shepherd_release_phase" in names
    assert not names & {"shepherd_revisions_total", "shepherd_change_failure_ratio"}
