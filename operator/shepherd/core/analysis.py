"""Canary and bake analysis: which measurements are due, how one is judged, and the verdict.

The shell asks `due_measurements` what to query, runs the queries against
Prometheus, and hands the outcomes to `decide` as observations; nothing here
does I/O. Results follow Argo Rollouts' vocabulary, with two guards it lacks:
errors are never counted as measurements, and a step needs at least one
Successful measurement per metric, so missing data never promotes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from shepherd.core import reasons
from shepherd.core.promql import render_query
from shepherd.core.spec import AnalysisStep, Metric, ReleaseSpec, waves
from shepherd.core.status import Phase, Rollout
from shepherd.core.timefmt import format_time, parse_time

Result = Literal["Successful", "Failed", "Inconclusive", "Error"]
SEVERITY: dict[str, int] = {"Successful": 0, "Inconclusive": 1, "Error": 2, "Failed": 3}
MAX_RECORDS = 50
MIN_SAMPLES_FOR_TEST = 3
MIN_SAMPLE_WINDOW = timedelta(seconds=30)
SAMPLES_PER_WINDOW = 30


@dataclass(frozen=True)
class QueryOutcome:
    """One Prometheus answer, as plain data."""

    outcome: str  # "value" | "empty" | "nan" | "multiple" | "error"
    value: float | None = None
    values: tuple[float, ...] = ()  # a range query's samples, for the statistical comparison
    message: str = ""
    query: str = ""


@dataclass(frozen=True)
class MeasurementRequest:
    stage: str  # the analysis run this measurement belongs to
    metric: str
    component: str | None
    queries: Mapping[str, str]  # role -> rendered PromQL; "stable" too when comparing with the baseline
    window: timedelta | None  # range queries over this window (statistical comparison), else instant


@dataclass(frozen=True)
class Measurement:
    request: MeasurementRequest
    outcomes: Mapping[str, QueryOutcome]  # by role
    at: datetime


@dataclass(frozen=True)
class Judgement:
    result: Result
    value: float | None
    baseline: float | None
    message: str


@dataclass(frozen=True)
class Tally:
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    last_at: datetime | None = None

    @property
    def measured(self) -> int:
        """Errors are not measurements: a step whose every query errored has measured nothing."""
        return self.successful + self.failed + self.inconclusive

    def add(self, result: str, at: datetime) -> Tally:
        error = result == "Error"
        return replace(
            self,
            successful=self.successful + (result == "Successful"),
            failed=self.failed + (result == "Failed"),
            inconclusive=self.inconclusive + (result == "Inconclusive"),
            errors=self.errors + error,
            consecutive_errors=self.consecutive_errors + 1 if error else 0,
            last_at=at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "successful": self.successful,
            "failed": self.failed,
            "inconclusive": self.inconclusive,
            "errors": self.errors,
            "consecutiveErrors": self.consecutive_errors,
            "lastAt": format_time(self.last_at) if self.last_at else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        def number(key: str) -> int:
            value = data.get(key)
            return value if isinstance(value, int) else 0

        return cls(
            number("successful"),
            number("failed"),
            number("inconclusive"),
            number("errors"),
            number("consecutiveErrors"),
            parse_time(data.get("lastAt")),
        )


@dataclass(frozen=True)
class AnalysisRun:
    """The counts of the analysis in progress, kept in status.analysisRun."""

    stage: str = ""
    started_at: datetime | None = None
    tallies: Mapping[str, Tally] = field(default_factory=dict)

    def to_status(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "startedAt": format_time(self.started_at) if self.started_at else None,
            "metrics": {name: t.to_dict() for name, t in sorted(self.tallies.items())},
        }

    @classmethod
    def from_status(cls, data: Any) -> AnalysisRun:
        if not isinstance(data, Mapping):
            return cls()
        metrics = data.get("metrics")
        if not isinstance(metrics, Mapping):
            metrics = {}
        return cls(
            stage=str(data.get("stage") or ""),
            started_at=parse_time(data.get("startedAt")),
            tallies={str(k): Tally.from_dict(v) for k, v in metrics.items() if isinstance(v, Mapping)},
        )


@dataclass(frozen=True)
class Verdict:
    state: Literal["Passed", "Running", "Failed"]
    reason: str = ""
    message: str = ""


def current_stage(rollout: Rollout, spec: ReleaseSpec) -> tuple[str, tuple[Metric, ...]] | None:
    """The analysis in progress: an analysis step once the canary is ready, or the bake."""
    prefix = f"revision {rollout.revision} attempt {rollout.attempt}"
    if rollout.phase is Phase.PROGRESSING and rollout.is_canary and rollout.unready_since is None:
        step = spec.steps[rollout.current_step] if rollout.current_step < len(spec.steps) else None
        # Each wave of components runs the steps anew: its measurements are its own.
        wave = f" wave {rollout.wave + 1}" if rollout.wave else ""
        if isinstance(step, AnalysisStep):
            return f"{prefix}{wave} step {rollout.current_step + 1}", spec.metrics_for(step.metrics)
    if rollout.phase is Phase.BAKING and spec.analysis is not None:
        metrics = spec.metrics_for(spec.bake_metrics)
        if metrics:
            return f"{prefix} bake", metrics
    return None


def due_measurements(
    rollout: Rollout,
    spec: ReleaseSpec,
    run: AnalysisRun,
    release: tuple[str, str],
    now: datetime,
) -> list[MeasurementRequest]:
    stage = current_stage(rollout, spec)
    if stage is None or spec.analysis is None:
        return []
    key, metrics = stage
    tallies = run.tallies if run.stage == key else {}
    requests = []
    for metric in metrics:
        last = tallies.get(metric.name, Tally()).last_at
        if last is not None and now < last + spec.analysis.interval_of(metric):
            continue
        baking = rollout.phase is Phase.BAKING
        components: Sequence[str | None] = (
            _measured_components(rollout, spec, baking) if metric.per_component else [None]
        )
        for component in components:
            requests.append(
                MeasurementRequest(
                    stage=key,
                    metric=metric.name,
                    component=component,
                    queries=_queries(metric, rollout, release, component, baking),
                    window=_sample_window(spec.analysis.interval_of(metric))
                    if metric.compare and metric.compare.test
                    else None,
                )
            )
    return requests


def _measured_components(rollout: Rollout, spec: ReleaseSpec, baking: bool) -> list[str | None]:
    """During a canary only the current wave's components run one; the bake measures them all."""
    if baking:
        return [c.name for c in spec.components]
    order = waves(spec)
    return list(order[min(rollout.wave, len(order) - 1)])


def _sample_window(interval: timedelta) -> timedelta:
    """A statistical test needs a population: the last interval, but never less than 30s of samples."""
    return max(interval, MIN_SAMPLE_WINDOW)


def sample_step(window: timedelta) -> float:
    """About 30 points per window, at most one a second: enough for the test, few repeats of one scrape."""
    return max(1.0, window.total_seconds() / SAMPLES_PER_WINDOW)


def next_measurement_at(rollout: Rollout, spec: ReleaseSpec, run: AnalysisRun) -> datetime | None:
    stage = current_stage(rollout, spec)
    if stage is None or spec.analysis is None or run.stage != stage[0]:
        return None
    moments = [
        tally.last_at + spec.analysis.interval_of(metric)
        for metric in stage[1]
        if (tally := run.tallies.get(metric.name)) is not None and tally.last_at is not None
    ]
    return min(moments) if moments else None


def _queries(
    metric: Metric, rollout: Rollout, release: tuple[str, str], component: str | None, baking: bool
) -> dict[str, str]:
    namespace, name = release

    def render(role: str, version: str, revision: int) -> str:
        values = {
            "namespace": namespace,
            "release": name,
            "component": component or "",
            "version": version,
            "revision": str(revision),
            "role": role,
        }
        return render_query(metric.query, values)

    if baking:
        # After promotion the stable Deployments run the new version: there is no baseline left to compare.
        return {"stable": render("stable", rollout.version, rollout.revision)}
    queries = {"canary": render("canary", rollout.version, rollout.revision)}
    if metric.compare is not None:
        queries["stable"] = render("stable", rollout.stable_version, rollout.stable_revision)
    return queries


def judge(metric: Metric, measurement: Measurement) -> Judgement:
    roles = measurement.outcomes
    subject = roles.get("canary") or roles.get("stable")
    if subject is None:
        return Judgement("Error", None, None, f"metric {metric.name}: no result")
    problem = _unusable(metric, subject, "")
    if problem is not None:
        return problem
    value = _summary(subject)
    compare = metric.compare if "canary" in roles else None
    baseline: float | None = None
    if compare is not None:
        stable = roles.get("stable")
        if stable is None:
            return Judgement("Error", value, None, f"metric {metric.name}: the baseline was not measured")
        problem = _unusable(metric, stable, "baseline ")
        if problem is not None:
            return replace(problem, value=value)
        baseline = _summary(stable)
        failure = _compare_failure(metric, subject, stable, value, baseline)
        if failure is not None:
            return Judgement("Failed", value, baseline, failure)
    bound = _bound_failure(metric, value)
    if bound is not None:
        return Judgement("Failed", value, baseline, bound)
    against = f" (stable {baseline:.6g})" if baseline is not None else ""
    return Judgement(
        "Successful", value, baseline, f"metric {metric.name}: {value:.6g}{against} within limits"
    )


def _unusable(metric: Metric, outcome: QueryOutcome, what: str) -> Judgement | None:
    label = f"metric {metric.name}: {what}query {outcome.query!r}"
    if outcome.outcome == "error":
        return Judgement("Error", None, None, f"{label} failed: {outcome.message}")
    if outcome.outcome == "multiple":
        return Judgement("Error", None, None, f"{label} must return one sample: {outcome.message}")
    if outcome.outcome in ("empty", "nan") or (outcome.outcome == "value" and outcome.value is None):
        return Judgement("Inconclusive", None, None, f"{label} returned no data ({outcome.outcome})")
    if outcome.outcome == "values" and len(outcome.values) < MIN_SAMPLES_FOR_TEST:
        return Judgement(
            "Inconclusive", None, None, f"{label} returned {len(outcome.values)} samples, the test needs 3"
        )
    return None


def _summary(outcome: QueryOutcome) -> float:
    if outcome.values:
        return float(statistics.median(outcome.values))
    assert outcome.value is not None
    return outcome.value


def _bound_failure(metric: Metric, value: float) -> str | None:
    if metric.max is not None and value > metric.max:
        return f"metric {metric.name}: {value:.6g} is above max {metric.max:g}"
    if metric.min is not None and value < metric.min:
        return f"metric {metric.name}: {value:.6g} is below min {metric.min:g}"
    return None


def _compare_failure(
    metric: Metric, canary: QueryOutcome, stable: QueryOutcome, value: float, baseline: float
) -> str | None:
    compare = metric.compare
    assert compare is not None
    if compare.max_increase is not None and value > baseline * (1 + compare.max_increase) + _epsilon(
        baseline
    ):
        return (
            f"metric {metric.name}: canary {value:.6g} is more than {compare.max_increase:.0%} above "
            f"stable {baseline:.6g}"
        )
    if compare.max_decrease is not None and value < baseline * (1 - compare.max_decrease) - _epsilon(
        baseline
    ):
        return (
            f"metric {metric.name}: canary {value:.6g} is more than {compare.max_decrease:.0%} below "
            f"stable {baseline:.6g}"
        )
    if compare.test == "mann-whitney":
        from scipy.stats import mannwhitneyu

        worse = "greater" if compare.direction == "increase" else "less"
        p_value = float(mannwhitneyu(canary.values, stable.values, alternative=worse).pvalue)
        if not math.isnan(p_value) and p_value < compare.alpha:
            return (
                f"metric {metric.name}: canary samples are significantly {worse} than stable "
                f"(Mann-Whitney U, p={p_value:.3g} < alpha {compare.alpha:g}; "
                f"medians {value:.6g} vs {baseline:.6g})"
            )
    return None


def _epsilon(baseline: float) -> float:
    """Floating-point slack, so an unchanged canary never fails a 0% tolerance."""
    return abs(baseline) * 1e-9


def combine(judgements: Sequence[Judgement]) -> Judgement:
    """One round of a per-component metric counts once, with its worst component's result."""
    return max(judgements, key=lambda j: SEVERITY[j.result])


def verdict(metrics: Sequence[Metric], run: AnalysisRun, *, complete: bool = True) -> Verdict:
    """Failed as soon as a limit is exceeded; Passed once every metric has its count and a success."""
    waiting = []
    for metric in metrics:
        if metric.dry_run:
            continue
        tally = run.tallies.get(metric.name, Tally())
        if tally.failed > metric.failure_limit:
            return Verdict(
                "Failed",
                reasons.ANALYSIS_FAILED,
                f"metric {metric.name}: {tally.failed} failed measurement(s), "
                f"failureLimit is {metric.failure_limit}",
            )
        if tally.inconclusive > metric.inconclusive_limit:
            return Verdict(
                "Failed",
                reasons.ANALYSIS_INCONCLUSIVE,
                f"metric {metric.name}: {tally.inconclusive} inconclusive measurement(s), "
                f"inconclusiveLimit is {metric.inconclusive_limit}",
            )
        if tally.consecutive_errors > metric.consecutive_error_limit:
            return Verdict(
                "Failed",
                reasons.ANALYSIS_ERROR,
                f"metric {metric.name}: {tally.consecutive_errors} consecutive errors, "
                f"consecutiveErrorLimit is {metric.consecutive_error_limit}",
            )
        if tally.measured < metric.count or tally.successful == 0:
            waiting.append(f"{metric.name} {tally.successful}/{metric.count}")
    if waiting or not complete:
        return Verdict(
            "Running", reasons.RUNNING, "measuring " + (", ".join(waiting) or "until the bake ends")
        )
    return Verdict("Passed", reasons.SUCCESSFUL, "every metric passed")


def fold(
    run: AnalysisRun,
    stage: str,
    metrics: Sequence[Metric],
    measurements: Sequence[Measurement],
    now: datetime,
) -> tuple[AnalysisRun, list[tuple[Measurement, Judgement]]]:
    """Count this stage's new measurements; results of an earlier stage are dropped."""
    if run.stage != stage:
        run = AnalysisRun(stage=stage, started_at=now, tallies={})
    by_name = {m.name: m for m in metrics}
    judged: list[tuple[Measurement, Judgement]] = []
    rounds: dict[str, list[Judgement]] = {}
    for measurement in measurements:
        metric = by_name.get(measurement.request.metric)
        if metric is None or measurement.request.stage != stage:
            continue
        judgement = judge(metric, measurement)
        judged.append((measurement, judgement))
        rounds.setdefault(metric.name, []).append(judgement)
    tallies = dict(run.tallies)
    for name, judgements in rounds.items():
        at = max(m.at for m, _ in judged if m.request.metric == name)
        tallies[name] = tallies.get(name, Tally()).add(combine(judgements).result, at)
    return replace(run, tallies=tallies), judged


def record(measurement: Measurement, judgement: Judgement) -> dict[str, Any]:
    request = measurement.request
    role = "canary" if "canary" in request.queries else "stable"
    entry: dict[str, Any] = {
        "metric": request.metric,
        "role": role,
        "value": judgement.value,
        "result": judgement.result,
        "at": format_time(measurement.at),
        "message": judgement.message,
        "query": request.queries[role],
    }
    if request.component:
        entry["component"] = request.component
    if judgement.baseline is not None:
        entry["baseline"] = judgement.baseline
    return entry
