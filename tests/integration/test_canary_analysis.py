"""Stories of canary analysis against the real Prometheus, scraping traffic the test controls."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from cluster import Cluster, quickstart_release

from prometheus_fixtures import wait_for_value
from shepherd.core.promql import render_query
from shepherd.lab.exporter import SeriesKey, TrafficExporter
from shepherd.lab.promserver import PrometheusServer
from shepherd.prometheus import Connection, Prometheus

SELECTOR = 'namespace="{{namespace}}",release="{{release}}",version="{{version}}"'
ERROR_RATE = (
    f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[5s]))'
    f" / sum(rate(http_requests_total{{{SELECTOR}}}[5s]))"
)
LATENCY = (
    f"sum(rate(http_request_duration_seconds_sum{{{SELECTOR}}}[5s]))"
    f" / sum(rate(http_request_duration_seconds_count{{{SELECTOR}}}[5s]))"
)


_unique = itertools.count(1)


@dataclass(frozen=True)
class Versions:
    """Versions no other test has used: Prometheus keeps every test's series for the whole session."""

    stable: str
    canary: str


@pytest.fixture
def versions() -> Versions:
    number = next(_unique)
    return Versions(f"1.0.{number}", f"1.1.{number}")


def error_rate(**extra: Any) -> dict[str, Any]:
    return {"name": "error-rate", "query": ERROR_RATE, "max": 0.05, "count": 2, **extra}


def analysed(
    prometheus: PrometheusServer,
    version: str,
    metrics: list[dict[str, Any]],
    steps: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return quickstart_release(
        version,
        strategy={"canary": {"steps": steps or [{"setWeight": 50}, {"analysis": {}}, {"setWeight": 75}]}},
        analysis={
            "prometheus": {"address": prometheus.url, "timeout": "2s"},
            "interval": "1s",
            "metrics": metrics,
        },
        **spec,
    )


def serve(exporter: TrafficExporter, version: str, role: str, **traffic: float) -> None:
    for component in ("api", "web"):
        exporter.set_traffic(SeriesKey("default", "shop", component, version, role), rps=50, **traffic)


def scraped(prometheus_api: Prometheus, version: str) -> None:
    """Wait until Prometheus has samples enough of this version for a rate, as after pods served a while."""
    query = render_query(ERROR_RATE, {"namespace": "default", "release": "shop", "version": version})
    wait_for_value(prometheus_api, query)


def stable_release(
    cluster: Cluster,
    prometheus: PrometheusServer,
    exporter: TrafficExporter,
    versions: Versions,
    metrics: list[dict[str, Any]],
    **traffic: float,
) -> None:
    serve(exporter, versions.stable, "stable", **traffic)
    cluster.apply(analysed(prometheus, versions.stable, metrics, postRelease={}))
    scraped(Prometheus(Connection(prometheus.url)), versions.stable)
    cluster.wait_phase("Succeeded", revision=1)


def test_healthy_canary_is_promoted(
    cluster: Cluster, prometheus: PrometheusServer, exporter: TrafficExporter, versions: Versions
) -> None:
    stable_release(cluster, prometheus, exporter, versions, [error_rate()])
    serve(exporter, versions.canary, "canary", error_ratio=0.0)
    scraped(Prometheus(Connection(prometheus.url)), versions.canary)
    cluster.apply(analysed(prometheus, versions.canary, [error_rate()], postRelease={"bake": "2s"}))
    status = cluster.wait_phase("Succeeded", revision=2)
    canary = [r for r in status["analysis"] if r["role"] == "canary"]
    assert len(canary) >= 2 and {r["result"] for r in canary} == {"Successful"}
    assert canary[0]["value"] == 0.0
    assert f'version="{versions.canary}"' in canary[0]["query"]
    assert any(r["role"] == "stable" for r in status["analysis"]), "the bake measured the promoted version"


def test_twenty_percent_errors_roll_back(
    cluster: Cluster, prometheus: PrometheusServer, exporter: TrafficExporter, versions: Versions
) -> None:
    stable_release(cluster, prometheus, exporter, versions, [error_rate()])
    serve(exporter, versions.canary, "canary", error_ratio=0.2)
    scraped(Prometheus(Connection(prometheus.url)), versions.canary)
    cluster.apply(analysed(prometheus, versions.canary, [error_rate()]))
    status = cluster.wait_phase("RolledBack")
    assert status["reason"] == "AnalysisFailed"
    failed = [r for r in status["analysis"] if r["result"] == "Failed"]
    assert failed and 0.1 < failed[-1]["value"] < 0.3
    assert "above max 0.05" in failed[-1]["message"]
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}
    analysis = next(c for c in status["conditions"] if c["type"] == "Analysis")
    assert analysis["status"] == "False"
    warnings = [e for e in cluster.events() if e["reason"] == "MeasurementFailed"]
    assert warnings and "http_requests_total" in warnings[0]["message"]


def test_latency_regression_is_caught_only_by_the_baseline_comparison(
    cluster: Cluster, prometheus: PrometheusServer, exporter: TrafficExporter, versions: Versions
) -> None:
    absolute = {"name": "latency", "query": LATENCY, "max": 1.0, "count": 2}
    relative = {
        "name": "latency-vs-stable",
        "query": LATENCY,
        "count": 2,
        "compare": {"baseline": "stable", "maxIncrease": "10%"},
    }
    stable_release(cluster, prometheus, exporter, versions, [absolute], latency_seconds=0.100)
    serve(exporter, versions.canary, "canary", latency_seconds=0.130)
    scraped(Prometheus(Connection(prometheus.url)), versions.canary)
    cluster.apply(analysed(prometheus, versions.canary, [absolute, relative]))
    status = cluster.wait_phase("RolledBack")
    assert status["reason"] == "AnalysisFailed"
    by_metric = {r["metric"]: r for r in status["analysis"]}
    assert by_metric["latency"]["result"] == "Successful", "the absolute threshold alone would have promoted"
    regression = by_metric["latency-vs-stable"]
    assert regression["result"] == "Failed"
    assert regression["value"] == pytest.approx(0.13, rel=0.01)
    assert regression["baseline"] == pytest.approx(0.10, rel=0.01)


def test_no_traffic_is_inconclusive_and_fails_after_the_limit(
    cluster: Cluster, prometheus: PrometheusServer, exporter: TrafficExporter, versions: Versions
) -> None:
    stable_release(cluster, prometheus, exporter, versions, [error_rate()])
    cluster.apply(analysed(prometheus, versions.canary, [error_rate(inconclusiveLimit=1)]))
    status = cluster.wait_phase("RolledBack")
    assert status["reason"] == "AnalysisInconclusive"
    assert [r["result"] for r in status["analysis"] if r["role"] == "canary"] == ["Inconclusive"] * 2


def test_prometheus_down_mid_analysis_never_promotes_and_rolls_back(
    cluster: Cluster, prometheus: PrometheusServer, exporter: TrafficExporter, versions: Versions
) -> None:
    stable_release(cluster, prometheus, exporter, versions, [error_rate()])
    serve(exporter, versions.canary, "canary")
    scraped(Prometheus(Connection(prometheus.url)), versions.canary)
    cluster.apply(analysed(prometheus, versions.canary, [error_rate(count=100, consecutiveErrorLimit=2)]))
    cluster.wait_status(
        "a successful measurement",
        lambda s: any(r["result"] == "Successful" for r in s.get("analysis") or [] if r["role"] == "canary"),
    )
    phases: set[str] = set()
    prometheus.stop()
    try:
        status = cluster.wait_status(
            "the rollback", lambda s: bool(phases.add(s["phase"])) or s["phase"] == "RolledBack"
        )
    finally:
        prometheus.start()
    assert "Promoting" not in phases and "Baking" not in phases
    assert status["reason"] == "AnalysisError"
    errors = [r for r in status["analysis"] if r["result"] == "Error"]
    assert len(errors) == 3, "consecutiveErrorLimit 2: the third error in a row fails"


def test_regression_during_bake_restores_the_previous_template(
    cluster: Cluster, prometheus: PrometheusServer, exporter: TrafficExporter, versions: Versions
) -> None:
    stable_release(cluster, prometheus, exporter, versions, [error_rate()])
    serve(exporter, versions.canary, "canary")
    scraped(Prometheus(Connection(prometheus.url)), versions.canary)
    cluster.apply(analysed(prometheus, versions.canary, [error_rate(count=1)], postRelease={"bake": "1m"}))
    cluster.wait_phase("Baking", revision=2)
    assert cluster.images()["shop-api"] == f"ghcr.io/example/shop-api:{versions.canary}"
    serve(exporter, versions.canary, "canary", error_ratio=0.5)
    status = cluster.wait_phase("RolledBack")
    assert status["reason"] == "BakeFailed"
    assert cluster.images() == {
        "shop-api": f"ghcr.io/example/shop-api:{versions.stable}",
        "shop-web": f"ghcr.io/example/shop-web:{versions.stable}",
    }


def test_a_query_prometheus_cannot_parse_is_rejected_before_traffic_moves(
    cluster: Cluster, prometheus: PrometheusServer, exporter: TrafficExporter, versions: Versions
) -> None:
    stable_release(cluster, prometheus, exporter, versions, [error_rate()])
    broken = {"name": "broken", "query": 'sum(rate(http_requests_total{version="{{version}}"}[5s]', "max": 1}
    cluster.apply(analysed(prometheus, versions.canary, [broken]))
    cluster.kubectl("wait", "--for=condition=Stalled", "release/shop", "--timeout=30s")
    status = cluster.status()
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "InvalidSpec"
    assert "spec.analysis.metrics[0].query" in stalled["message"] and "metric broken" in stalled["message"]
    assert status["phase"] == "Pending"
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}, "no canary was created"


def test_mann_whitney_compares_range_samples_of_canary_and_stable(
    cluster: Cluster, prometheus: PrometheusServer, exporter: TrafficExporter, versions: Versions
) -> None:
    test = {
        "name": "latency-distribution",
        "query": LATENCY,
        "count": 1,
        "compare": {"baseline": "stable", "test": "mann-whitney", "alpha": 0.05},
    }
    stable_release(cluster, prometheus, exporter, versions, [test], latency_seconds=0.100)
    serve(exporter, versions.canary, "canary", latency_seconds=0.130)
    reader = Prometheus(Connection(prometheus.url))
    query = render_query(LATENCY, {"namespace": "default", "release": "shop", "version": versions.canary})
    wait_for_value(reader, query)
    # Three samples at least, a second apart, so the test has a population on both sides.
    wait_for_value(reader, f"count_over_time(({query})[3s:1s])", lambda count: count >= 3)
    cluster.apply(analysed(prometheus, versions.canary, [test]))
    status = cluster.wait_phase("RolledBack")
    measured = next(r for r in status["analysis"] if r["metric"] == "latency-distribution")
    assert measured["result"] == "Failed", measured["message"]
    assert "Mann-Whitney U" in measured["message"]
    assert measured["value"] == pytest.approx(0.13, rel=0.01)
    assert measured["baseline"] == pytest.approx(0.10, rel=0.01)


def test_a_metric_gate_holds_the_release_until_production_is_healthy(
    cluster: Cluster, prometheus: PrometheusServer, exporter: TrafficExporter, versions: Versions
) -> None:
    stable_release(cluster, prometheus, exporter, versions, [error_rate()], error_ratio=0.3)
    healthy_production = {
        "name": "healthy-production",
        "metric": {
            "query": (
                f'sum(rate(http_requests_total{{namespace="{{{{namespace}}}}",version="{versions.stable}",'
                f'code=~"5.."}}[5s])) or vector(0)'
            ),
            "max": 0,
        },
    }
    serve(exporter, versions.canary, "canary")
    cluster.apply(analysed(prometheus, versions.canary, [error_rate()], gates=[healthy_production]))
    gate = cluster.wait_status(
        "the gate to see the errors",
        lambda s: "is above max 0" in ((s.get("gates") or [{}])[0].get("message", "")),
    )["gates"][0]
    assert gate["state"] == "Pending"
    assert cluster.status()["phase"] == "Gating"
    assert "shop-api-canary" not in cluster.replicas()

    serve(exporter, versions.stable, "stable", error_ratio=0.0)
    status = cluster.wait_phase("Succeeded", revision=2)
    assert status["gates"][0]["state"] == "Passed"
