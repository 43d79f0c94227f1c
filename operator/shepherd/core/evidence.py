"""What Prometheus has said, in the form the phase machine judges by.

Before `decide`, `needed` tells the shell which queries to run (measurements due,
query syntax to check); `decide` then folds the answers into the analysis run
kept in status and asks `stage_verdict` whether the current step or bake passed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shepherd.core import reasons
from shepherd.core.actions import Event
from shepherd.core.analysis import (
    MAX_RECORDS,
    AnalysisRun,
    Verdict,
    current_stage,
    due_measurements,
    fold,
    record,
    verdict,
)
from shepherd.core.gates import GateResult, metric_gate_queries, webhook_calls
from shepherd.core.model import Needed, Observations, QueryCheck, ReleaseObject
from shepherd.core.policy import Freeze, Policy
from shepherd.core.promql import render_query
from shepherd.core.spec import Gate, ReleaseSpec, SpecError
from shepherd.core.status import Condition, Phase, Rollout

RECHECK_PROMETHEUS = timedelta(seconds=5)


def needed(release: ReleaseObject, now: datetime, policy_gates: tuple[Gate, ...] = ()) -> Needed:
    try:
        spec = release.release_spec()
    except SpecError:
        return Needed()
    rollout = Rollout.from_status(release.status)
    run = AnalysisRun.from_status(release.status.get("analysisRun"))
    where = (release.namespace, release.name)
    measurements = tuple(due_measurements(rollout, spec, run, where, now))
    checks = (
        ()
        if checked(release.status, rollout, spec) is not None
        else tuple(query_checks(rollout, spec, where))
    )
    gating = rollout.phase is Phase.GATING
    gates = (*spec.gates, *policy_gates)
    where_and_what = (release.namespace, release.name, rollout.version, rollout.revision)
    if not gating:
        return Needed(measurements, checks)
    queries, calls = metric_gate_queries(gates, *where_and_what), webhook_calls(gates, *where_and_what)
    return Needed(measurements, checks, queries, calls, gate_objects=True)


@dataclass(frozen=True)
class CheckState:
    """Whether Prometheus has parsed this revision's queries; traffic moves only after it has."""

    key: str = ""
    error: str | None = None  # a query Prometheus cannot parse: InvalidSpec
    waiting: str | None = None  # why the queries have not been checked yet

    @property
    def ready(self) -> bool:
        return self.error is None and self.waiting is None

    def to_status(self) -> dict[str, Any] | None:
        return {"key": self.key, "error": self.error} if self.key else None


@dataclass(frozen=True)
class Evidence:
    """What Prometheus and the gates say, for the machine to judge by."""

    run: AnalysisRun
    check: CheckState
    gates: tuple[GateResult, ...] = ()  # every gate's result, freezes included
    gate_specs: tuple[Gate, ...] = ()  # the Release's own gates and its policies'
    policies: tuple[Policy, ...] = ()
    freezes: tuple[Freeze, ...] = ()  # active now


def check_key(rollout: Rollout, spec: ReleaseSpec) -> str | None:
    if spec.analysis is None or rollout.phase is not Phase.PENDING:
        return None
    material = [rollout.revision, rollout.attempt, [m.query for m in spec.analysis.metrics]]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:16]


def checked(status: Mapping[str, Any], rollout: Rollout, spec: ReleaseSpec) -> CheckState | None:
    """The stored check of the current queries, or None if they still need checking."""
    key = check_key(rollout, spec)
    if key is None:
        return CheckState()
    stored = status.get("analysisCheck")
    if isinstance(stored, Mapping) and stored.get("key") == key:
        error = stored.get("error")
        return CheckState(key, str(error) if error else None)
    return None


def query_checks(rollout: Rollout, spec: ReleaseSpec, where: tuple[str, str]) -> list[QueryCheck]:
    key = check_key(rollout, spec)
    if key is None or spec.analysis is None:
        return []
    values = {
        "namespace": where[0],
        "release": where[1],
        "component": spec.components[0].name,
        "version": rollout.version,
        "revision": str(rollout.revision),
        "role": "canary",
    }
    return [
        QueryCheck(
            key, metric.name, f"spec.analysis.metrics[{index}].query", render_query(metric.query, values)
        )
        for index, metric in enumerate(spec.analysis.metrics)
    ]


def check_queries(
    status: Mapping[str, Any],
    rollout: Rollout,
    spec: ReleaseSpec,
    observed: Observations,
    events: list[Event],
) -> CheckState:
    key = check_key(rollout, spec)
    if key is None:
        return CheckState()
    results = [r for r in observed.query_checks if r.check.key == key]
    errors = [r for r in results if r.error]
    if errors:
        first = errors[0]
        problem = f"Prometheus cannot parse the query: {first.error}"
        message = f"{first.check.field}: metric {first.check.metric}: {problem}"
        events.append(Event("Warning", reasons.INVALID_SPEC, message))
        return CheckState(key, message)
    unreachable = [r for r in results if r.unreachable]
    if unreachable:
        return CheckState(
            waiting=f"waiting for Prometheus to check the analysis queries: {unreachable[0].unreachable}"
        )
    if results:
        return CheckState(key)
    return checked(status, rollout, spec) or CheckState(
        waiting="checking the analysis queries with Prometheus"
    )


def fold_measurements(
    release: ReleaseObject,
    rollout: Rollout,
    spec: ReleaseSpec,
    observed: Observations,
    now: datetime,
    events: list[Event],
) -> tuple[AnalysisRun, list[dict[str, Any]]]:
    run = AnalysisRun.from_status(release.status.get("analysisRun"))
    records = [dict(r) for r in release.status.get("analysis") or [] if isinstance(r, Mapping)]
    stage = current_stage(rollout, spec)
    if stage is None or not observed.measurements:
        return run, records
    run, judged = fold(run, stage[0], stage[1], observed.measurements, now)
    for measurement, judgement in judged:
        entry = record(measurement, judgement)
        records.append(entry)
        if judgement.result != "Successful":
            events.append(
                Event(
                    "Warning",
                    reasons.measurement_event(judgement.result),
                    f"{judgement.message}; query: {entry['query']}",
                )
            )
    return run, records[-MAX_RECORDS:]


def stage_verdict(rollout: Rollout, spec: ReleaseSpec, run: AnalysisRun, now: datetime) -> Verdict:
    stage = current_stage(rollout, spec)
    if stage is None:
        return Verdict("Passed")
    key, metrics = stage
    counted = run if run.stage == key else AnalysisRun(stage=key)
    complete = rollout.phase is not Phase.BAKING or baked(rollout, spec, now)
    return verdict(metrics, counted, complete=complete)


def baked(rollout: Rollout, spec: ReleaseSpec, now: datetime) -> bool:
    return spec.bake is None or rollout.phase_since is None or now >= rollout.phase_since + spec.bake


def analysis_condition(rollout: Rollout, spec: ReleaseSpec, run: AnalysisRun) -> Condition:
    if not run.stage:
        return Condition(
            "Analysis", "Unknown", reasons.NOT_STARTED, "no analysis has run for this revision yet"
        )
    metrics = [m for m in spec.metrics_for(None) if m.name in run.tallies]
    latest = verdict(metrics, run)
    status = {"Passed": "True", "Failed": "False"}.get(latest.state, "Unknown")
    return Condition("Analysis", status, latest.reason or latest.state, f"{run.stage}: {latest.message}")
