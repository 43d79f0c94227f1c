"""Canary and bake analysis in the phase machine, with Prometheus answering through the simulation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from simulation import PROMOTE, World, container, ordered_spec, release_spec

from shepherd.core.analysis import (
    AnalysisRun,
    Measurement,
    MeasurementRequest,
    QueryOutcome,
    Tally,
    judge,
    verdict,
)
from shepherd.core.spec import SpecError, parse_spec

TIMEOUT = QueryOutcome("error", message="read timed out after 10s")
ERRORS = 'sum(rate(http_requests_total{code=~"5..",version="{{version}}",role="{{role}}"}[1m]))'


def analysed_spec(version: str, metric: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    metrics = [metric or {"name": "error-rate", "query": ERRORS, "max": 0.01, "count": 3}]
    spec = release_spec(
        version,
        strategy={"canary": {"steps": [{"setWeight": 50}, {"analysis": {}}, {"setWeight": 75}]}},
        analysis={"prometheus": {"address": "http://prometheus:9090"}, "interval": "30s", "metrics": metrics},
        postRelease={"bake": "2m"},
    )
    spec.update(overrides)
    return spec


def world_with(metric: dict[str, Any] | None = None, **overrides: Any) -> World:
    world = World(analysed_spec("1.0.0", metric, **overrides))
    world.prometheus = lambda metric, role, component: 0.0
    world.run_until("Succeeded")
    world.set_spec(analysed_spec("1.1.0", metric, **overrides))
    return world


def at_analysis_step(world: World) -> None:
    world.settle()
    assert world.status["currentStep"] == 1, world.status["message"]


def test_healthy_canary_is_measured_count_times_then_continues() -> None:
    world = world_with(postRelease={})
    world.prometheus = lambda metric, role, component: 0.001
    decision = world.settle()
    assert world.status["currentStep"] == 1
    assert world.status["analysisRun"]["metrics"]["error-rate"]["successful"] == 1
    assert decision.wake_at == world.now + timedelta(seconds=30), (
        "the next measurement is due one interval later"
    )
    world.advance(timedelta(seconds=30))
    assert world.status["currentStep"] == 1
    world.advance(timedelta(seconds=30))
    assert world.status["currentStep"] >= 2, world.status["message"]
    canary = [r for r in world.status["analysis"] if r["role"] == "canary"]
    assert [r["result"] for r in canary] == ["Successful"] * 3
    assert 'version="1.1.0",role="canary"' in canary[-1]["query"]
    analysis = next(c for c in world.status["conditions"] if c["type"] == "Analysis")
    assert analysis["status"] == "True"


def test_a_failed_measurement_rolls_back_at_once() -> None:
    world = world_with()
    world.prometheus = lambda metric, role, component: 0.2
    world.settle()
    assert world.phase == "RolledBack"
    assert world.status["reason"] == "AnalysisFailed"
    assert "0.2 is above max 0.01" in world.status["analysis"][-1]["message"]
    assert not any(name.endswith("-canary") for name in world.deployments)
    assert any(e.reason == "MeasurementFailed" and "query:" in e.message for e in world.events)
    assert next(c for c in world.status["conditions"] if c["type"] == "Analysis")["status"] == "False"


def test_failure_limit_tolerates_that_many_failures() -> None:
    world = world_with({"name": "error-rate", "query": ERRORS, "max": 0.01, "count": 3, "failureLimit": 1})
    answers = iter([0.2, 0.001, 0.2])
    world.prometheus = lambda metric, role, component: next(answers)
    world.settle()
    assert world.phase == "Progressing"
    world.advance(timedelta(seconds=30))
    assert world.phase == "Progressing"
    world.advance(timedelta(seconds=30))
    assert world.phase == "RolledBack"


def test_no_data_is_inconclusive_and_fails_after_the_limit() -> None:
    world = world_with({"name": "error-rate", "query": ERRORS, "max": 0.01, "inconclusiveLimit": 1})
    world.prometheus = lambda metric, role, component: None
    world.settle()
    assert world.phase == "Progressing", "one inconclusive measurement is tolerated"
    world.advance(timedelta(seconds=30))
    assert world.phase == "RolledBack"
    assert world.status["reason"] == "AnalysisInconclusive"


def test_errors_never_pass_and_fail_after_the_consecutive_limit() -> None:
    world = world_with({"name": "error-rate", "query": ERRORS, "max": 0.01, "consecutiveErrorLimit": 2})
    world.prometheus = lambda metric, role, component: TIMEOUT
    world.settle()
    for _ in range(2):
        assert world.phase == "Progressing" and world.status["currentStep"] == 1
        world.advance(timedelta(seconds=30))
    assert world.phase == "RolledBack"
    assert world.status["reason"] == "AnalysisError"
    assert world.status["analysisRun"]["metrics"]["error-rate"]["successful"] == 0


def test_errors_are_not_measurements() -> None:
    world = world_with({"name": "error-rate", "query": ERRORS, "max": 0.01, "count": 1}, postRelease={})
    world.prometheus = lambda metric, role, component: TIMEOUT
    world.settle()
    world.prometheus = lambda metric, role, component: 0.0
    world.advance(timedelta(seconds=30))
    assert world.status["currentStep"] >= 2
    tally = world.status["analysisRun"]["metrics"]["error-rate"]
    assert (tally["errors"], tally["successful"], tally["consecutiveErrors"]) == (1, 1, 0)


def test_dry_run_metrics_are_reported_but_never_fail() -> None:
    dry = {"name": "latency", "query": ERRORS, "max": 0.5, "dryRun": True}
    world = World(analysed_spec("1.0.0"))
    world.prometheus = lambda metric, role, component: 0.0
    world.run_until("Succeeded")
    spec = analysed_spec("1.1.0")
    spec["analysis"]["metrics"].append(dry)
    world.set_spec(spec)
    world.prometheus = lambda metric, role, component: 9.0 if metric == "latency" else 0.0
    world.run_until("Succeeded")
    assert any(r["metric"] == "latency" and r["result"] == "Failed" for r in world.status["analysis"])


def test_baseline_comparison_fails_a_relative_regression_only() -> None:
    compare = {"name": "latency", "query": ERRORS, "compare": {"baseline": "stable", "maxIncrease": "10%"}}
    world = world_with(compare)
    world.prometheus = lambda metric, role, component: 0.300 if role == "stable" else 0.320
    world.settle()
    assert world.status["currentStep"] >= 2, "within 10% of stable"
    world = world_with(compare)
    world.prometheus = lambda metric, role, component: 0.300 if role == "stable" else 0.360
    world.settle()
    assert world.phase == "RolledBack"
    entry = world.status["analysis"][-1]
    assert (entry["value"], entry["baseline"]) == (0.36, 0.3)
    assert "more than 10% above stable" in entry["message"]
    assert 'role="stable"' in world.queries[-1].queries["stable"]


def test_mann_whitney_compares_sample_distributions() -> None:
    compare = {"name": "latency", "query": ERRORS, "compare": {"baseline": "stable", "test": "mann-whitney"}}
    stable = (0.30, 0.31, 0.29, 0.30, 0.32, 0.28, 0.30, 0.31)
    shifted = tuple(v + 0.05 for v in stable)

    def samples(canary: tuple[float, ...]) -> Any:
        return lambda metric, role, component: QueryOutcome(
            "values", values=stable if role == "stable" else canary
        )

    world = world_with(compare)
    world.prometheus = samples(stable)
    world.settle()
    assert world.status["currentStep"] >= 2
    world = world_with(compare)
    world.prometheus = samples(shifted)
    world.settle()
    assert world.phase == "RolledBack"
    assert "Mann-Whitney" in world.status["analysis"][-1]["message"]
    assert world.queries[-1].window == timedelta(seconds=30), "a range query over 30s at least"


def test_bake_failure_restores_the_previous_template() -> None:
    world = world_with()
    world.prometheus = lambda metric, role, component: 0.0
    world.annotations[PROMOTE] = "full"
    world.settle()
    assert world.phase == "Baking"
    assert world.image("shop-api") == "shop/api:1.1.0"
    world.prometheus = lambda metric, role, component: 0.5
    world.advance(timedelta(seconds=30))
    assert world.phase == "RolledBack"
    assert world.status["reason"] == "BakeFailed"
    assert world.image("shop-api") == "shop/api:1.0.0"
    assert world.status["analysis"][-1]["role"] == "stable"


def test_bake_needs_data_before_it_succeeds() -> None:
    world = world_with({"name": "error-rate", "query": ERRORS, "max": 0.01, "consecutiveErrorLimit": 100})
    world.annotations[PROMOTE] = "full"
    world.prometheus = lambda metric, role, component: TIMEOUT
    world.settle()
    world.advance(timedelta(minutes=3))
    assert world.phase == "Baking", "the bake is over, but nothing was measured"
    world.prometheus = lambda metric, role, component: 0.0
    world.advance(timedelta(seconds=30))
    assert world.phase == "Succeeded"


def test_without_automatic_rollback_a_failed_analysis_waits_for_a_person() -> None:
    world = world_with(rollback={"automatic": False})
    world.prometheus = lambda metric, role, component: 0.2
    world.settle()
    assert world.phase == "Failed" and world.status["reason"] == "AnalysisFailed"
    assert world.replicas("shop-api-canary") == 2, "held for a person to look at"
    assert next(c for c in world.status["conditions"] if c["type"] == "Stalled")["status"] == "True"
    world.prometheus = lambda metric, role, component: 0.0
    world.annotations[PROMOTE] = "true"
    world.settle()
    assert world.phase in ("Progressing", "Baking", "Promoting")
    assert world.status["canaryWeight"] >= 75


def test_a_query_prometheus_cannot_parse_stops_the_revision_before_traffic_moves() -> None:
    world = World(analysed_spec("1.0.0"))
    world.prometheus = lambda metric, role, component: 0.0
    world.run_until("Succeeded")
    world.parse_errors["error-rate"] = "1:5: parse error: unexpected identifier"
    world.set_spec(analysed_spec("1.1.0"))
    world.settle()
    assert world.phase == "Pending"
    stalled = next(c for c in world.status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "InvalidSpec"
    assert "spec.analysis.metrics[0].query" in stalled["message"] and "parse error" in stalled["message"]
    assert "shop-api-canary" not in world.deployments
    world.parse_errors.clear()
    fixed = analysed_spec("1.1.0", {"name": "error-rate", "query": ERRORS + " or vector(0)", "max": 0.01})
    world.set_spec(fixed)
    world.settle()
    assert world.phase != "Pending"


def test_queries_are_checked_again_when_prometheus_is_back() -> None:
    world = World(analysed_spec("1.0.0"))
    world.prometheus_down = True
    decision = world.settle()
    assert world.phase == "Pending"
    assert "connection refused" in world.status["message"]
    assert decision.wake_at == world.now + timedelta(seconds=5)
    world.prometheus_down = False
    world.prometheus = lambda metric, role, component: 0.0
    world.advance(timedelta(seconds=5))
    assert world.phase != "Pending"


def test_per_component_metrics_measure_each_component_and_count_the_worst() -> None:
    per_component = {"name": "errors", "query": 'x{component="{{component}}"}', "max": 0.01}
    world = world_with(per_component)
    world.prometheus = lambda metric, role, component: 0.5 if component == "web" else 0.0
    world.settle()
    assert world.phase == "RolledBack"
    assert {q.component for q in world.queries[-2:]} == {"api", "web"}
    assert 'component="web"' in world.status["analysis"][-1]["query"]


def test_measurements_kept_in_status_are_bounded() -> None:
    world = world_with({"name": "error-rate", "query": ERRORS, "max": 0.01, "count": 60})
    world.prometheus = lambda metric, role, component: 0.0
    for _ in range(60):
        world.advance(timedelta(seconds=30))
    assert len(world.status["analysis"]) == 50


def test_unknown_query_variables_are_spec_errors() -> None:
    spec = analysed_spec("1.0.0", {"name": "e", "query": 'x{pod="{{pod}}"}', "max": 1})
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert caught.value.field == "spec.analysis.metrics[0].query"
    assert "{{pod}}" in caught.value.message


def test_a_step_measured_only_by_errors_is_never_successful() -> None:
    metric = parse_spec(analysed_spec("1.0.0")).analysis.metrics[0]  # type: ignore[union-attr]
    run = AnalysisRun("s", None, {"error-rate": Tally(errors=10, consecutive_errors=3)})
    assert verdict([metric], run).state == "Running"


@pytest.mark.parametrize(
    ("outcome", "result"),
    [
        (QueryOutcome("value", 0.001), "Successful"),
        (QueryOutcome("value", 0.5), "Failed"),
        (QueryOutcome("empty"), "Inconclusive"),
        (QueryOutcome("nan"), "Inconclusive"),
        (QueryOutcome("multiple", message="2 series differ in {pod}"), "Error"),
        (QueryOutcome("error", message="timeout"), "Error"),
    ],
)
def test_judging_one_measurement(outcome: QueryOutcome, result: str) -> None:
    metric = parse_spec(analysed_spec("1.0.0")).analysis.metrics[0]  # type: ignore[union-attr]
    request = MeasurementRequest("s", "error-rate", None, {"canary": "q"}, None)
    assert judge(metric, Measurement(request, {"canary": outcome}, world_time())).result == result


def world_time() -> Any:
    return World(release_spec()).now


def test_per_component_requests_cover_every_component() -> None:
    spec = analysed_spec("1.0.0", {"name": "e", "query": 'x{c="{{component}}"}', "max": 1})
    assert parse_spec(spec).analysis.metrics[0].per_component  # type: ignore[union-attr]
    assert container("x")["spec"]["containers"][0]["image"] == "x"


def test_each_wave_is_analysed_on_its_own_and_only_its_components_are_measured() -> None:
    metric = {"name": "errors", "query": 'errors{component="{{component}}"}', "max": 0.01, "count": 2}
    world = World(analysed_spec("1.0.0", metric, postRelease={}, components=ordered_spec()["components"]))
    world.prometheus = lambda metric, role, component: 0.0
    world.run_until("Succeeded")
    world.set_spec(
        analysed_spec("1.1.0", metric, postRelease={}, components=ordered_spec("1.1.0")["components"])
    )
    world.run_until("Succeeded")
    by_stage: dict[str, set[str | None]] = {}
    for request in world.queries:
        by_stage.setdefault(request.stage, set()).add(request.component)
    assert by_stage == {
        "revision 2 attempt 1 step 2": {"backend"},
        "revision 2 attempt 1 wave 2 step 2": {"frontend"},
    }
    canary = [r for r in world.status["analysis"] if r["role"] == "canary"]
    assert [r["component"] for r in canary] == ["backend", "backend", "frontend", "frontend"], (
        "the second wave needs its own count of measurements"
    )
