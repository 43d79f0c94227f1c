"""The phase machine: `decide(release, observed, now)` -> what to write and do.

Pure: no I/O, no clock. The shell reads the Release and its Deployments and
ControllerRevisions, calls `decide`, applies the actions in order, posts the
events, writes the status, and calls again on the next change or at `wake_at`.

    Pending -> (Gating) -> (Migrating) -> Progressing -> (Paused) -> Promoting -> Baking -> Succeeded
                                |              |                         |           |
                                +--------------+-----> RollingBack <-----+-----------+  -> RolledBack
    Pending: held by spec.paused, or until Prometheus has parsed the analysis queries.
    Gating: every gate passes before anything moves. Migrating: spec.migrations' Jobs, in order.
    Progressing: setWeight, pause and analysis steps, each once the workloads are ready.
    Baking: postRelease.bake, measuring postRelease.metrics.
    First revision: Pending -> (Gating, Migrating) -> Progressing (all replicas, no canary) -> Baking.
    Failure with nothing to roll back to, or with `rollback.automatic: false`: Failed (held).

Revisions live in revisions.py, analysis evidence in evidence.py, migrations in migrations.py, the message
in report.py.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from shepherd.core import reasons
from shepherd.core.actions import Action, DeleteConfigMap, DeleteJob, Event, RemoveAnnotations
from shepherd.core.analysis import current_stage, due_measurements, next_measurement_at
from shepherd.core.checklist import checklist
from shepherd.core.commands import CommandAck, acknowledge, bounded, close_removed, is_done, read_acks
from shepherd.core.config import contents_in_use, rendered, unused_config_maps, with_config
from shepherd.core.evidence import (
    RECHECK_PROMETHEUS,
    Evidence,
    analysis_condition,
    baked,
    check_queries,
    fold_measurements,
    stage_verdict,
)
from shepherd.core.gates import (
    SPEC_AUTHOR,
    GateInputs,
    GateResult,
    audit,
    closed_windows,
    evaluate,
    gate_events,
    gate_jobs,
    gate_status,
    gates_condition,
    next_window_change,
)
from shepherd.core.jobs import stale_jobs
from shepherd.core.migrations import (
    MigrationInputs,
    migrate,
    migrate_down,
    migration_deadlines,
    migration_jobs,
    migration_progress,
)
from shepherd.core.model import Decision, Observations, ReleaseObject
from shepherd.core.plan import SCHEDULE_GATE, announce, reminder_at, schedule
from shepherd.core.policy import active_freezes, applicable, freeze_changes, policy_gates
from shepherd.core.rejection import held_status
from shepherd.core.replica_traffic import replica_traffic
from shepherd.core.report import PROGRESS_DETAILS, describe, format_duration, report_later, wave_label
from shepherd.core.revisions import (
    retained_revisions,
    revision_content,
    revision_records,
    rollback_target,
    select_revision,
    start_revision,
)
from shepherd.core.spec import (
    AnalysisStep,
    MetricGate,
    Pause,
    ReleaseSpec,
    RevisionContent,
    SetCanaryScale,
    SetHeaderRoute,
    SetWeight,
    SpecError,
    Waves,
    WebhookGate,
    WindowGate,
    content_of,
    parse_release_name,
    waves,
)
from shepherd.core.status import (
    IN_FLIGHT,
    PROMOTED,
    STALLED,
    CommandRecord,
    Override,
    Phase,
    Rollout,
    render_conditions,
    rollout_conditions,
)
from shepherd.core.timefmt import format_time
from shepherd.core.traffic import TrafficPlan, plan_traffic
from shepherd.core.workloads import GROUP, WorkloadPlan, desired_deployments, plan_workloads

PROMOTE = f"{GROUP}/promote"
ABORT = f"{GROUP}/abort"
RETRY = f"{GROUP}/retry"
ROLLBACK = f"{GROUP}/rollback"
COMMANDS = (ABORT, ROLLBACK, RETRY, PROMOTE)  # abort first: it wins over a promote given at the same time
ALL_STEPS_SKIPPED = "all steps skipped"
MAX_TRANSITIONS_PER_DECISION = 16
METRIC_GATE_POLL = timedelta(seconds=10)
# The Event of a transition into one of these phases is a Warning; into any other, Normal.
WARNING_PHASES = frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED})
# A revision in one of these has started its rollout: its gates and its planned time are behind it.
STARTED_PHASES = frozenset(
    {Phase.MIGRATING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.BAKING, Phase.SUCCEEDED}
)


def decide(release: ReleaseObject, observed: Observations, now: datetime) -> Decision:
    rollout = Rollout.from_status(release.status)
    try:
        parse_release_name(release.name)
        spec = release.release_spec()
    except SpecError as error:
        return _invalid_spec(release, rollout, error, now)
    events: list[Event] = []
    acks = read_acks(release.status)
    given = {key: str(release.annotations[key]) for key in COMMANDS if key in release.annotations}
    new_command = any(not is_done(acks, key, value) for key, value in given.items())
    held = held_status(release.generation, release.status, now, new_command)
    if held is not None:
        # The API server refused a write for this generation's content: never send it again in a loop.
        return Decision(held, (), (), None)

    rollout = select_revision(rollout, spec, observed.revisions, now, events)
    rollout, acks, consumed = _apply_commands(rollout, spec, release.annotations, acks, observed, now, events)
    content = revision_content(rollout, spec, observed.revisions)
    run, records = fold_measurements(release, rollout, spec, observed, now, events)
    check = check_queries(release.status, rollout, spec, observed, events)
    policies = tuple(applicable(observed.policies, observed.namespace_labels))
    gate_specs = (*spec.gates, *policy_gates(policies))
    freezes = tuple(active_freezes(policies, now))
    gate_inputs = GateInputs(
        release.ref,
        rollout.revision,
        rollout.attempt,
        rollout.version,
        observed.approvals,
        observed.releases,
        observed.gate_samples,
        observed.webhooks,
        observed.jobs,
        author=release.annotations.get(SPEC_AUTHOR, ""),
    )
    gate_results = tuple(evaluate(gate, gate_inputs, now) for gate in gate_specs) + tuple(
        GateResult(f"freeze/{f.policy}", "Pending", f.describe()) for f in freezes
    )
    rollback_of = rollout.override.rollback_of if rollout.override is not None else None
    scheduled = schedule(spec.plan, rollback_of, now)
    if scheduled is not None and (not scheduled[0] or rollout.phase is Phase.GATING):
        # A start time is a gate of its own while it is ahead, and shown as passed while gating.
        passed, message = scheduled
        gate_results += (GateResult(SCHEDULE_GATE, "Passed" if passed else "Pending", message),)
    evidence = Evidence(run, check, gate_results, gate_specs, policies, freezes)
    migrations = _migrations(release, rollout, spec, content, evidence, observed, now)

    # Gates are judged while gating; after that, status keeps the verdict that let the revision start.
    judging_gates = rollout.phase is Phase.GATING
    order = waves(spec, content.templates)
    planned = _plan(release, rollout, spec, content, observed)
    plan = planned.plan
    for _ in range(MAX_TRANSITIONS_PER_DECISION):
        following = _advance(
            _track_readiness(rollout, plan, now), spec, order, plan, evidence, migrations, now, events
        )
        if following == rollout:
            break
        rollout = following
        planned = _plan(release, rollout, spec, content, observed)
        plan = planned.plan
    progress = migration_progress(rollout, migrations)
    rollout = replace(rollout, message=describe(rollout, spec, order, plan, evidence, now, progress))

    actions: list[Action] = []
    retained = retained_revisions(rollout, spec, observed)
    # ConfigMaps before the records that name them: a record outlives its ConfigMaps, so a pass cut short
    # leaves nothing that no later pass would find.
    actions.extend(_unused_config(retained, content, observed))
    actions.extend(revision_records(release, rollout, spec, content, observed))
    if rollout.phase is Phase.GATING and not spec.paused:
        actions.extend(gate_jobs(gate_specs, gate_inputs))
    actions.extend(migration_jobs(rollout, migrations))
    actions.extend(DeleteJob(name) for name in stale_jobs(observed.jobs, retained))
    actions.extend(plan.actions)
    if consumed:
        # Last, after the status write that acknowledges the commands (the shell writes status first).
        actions.append(RemoveAnnotations(tuple(consumed), consumed))
    conditions = rollout_conditions(rollout, check.error)
    if spec.analysis is not None:
        conditions.append(analysis_condition(rollout, spec, run))
    previous_gates = [dict(g) for g in release.status.get("gates") or [] if isinstance(g, Mapping)]
    judging_gates = judging_gates or rollout.phase is Phase.GATING
    previous_checklist = [dict(i) for i in release.status.get("checklist") or [] if isinstance(i, Mapping)]
    if judging_gates:
        events.extend(gate_events(previous_gates, gate_results))
        shown_gates = gate_status(gate_results, previous_gates, now)
        shown_checklist = checklist(gate_specs, gate_results, previous_checklist, now)
    else:
        shown_gates, shown_checklist = previous_gates, previous_checklist
    if shown_gates:
        conditions.append(gates_condition(rollout, shown_gates))
    status = {
        **rollout.to_status(),
        "observedGeneration": release.generation,
        "conditions": render_conditions(
            conditions, release.status.get("conditions") or [], release.generation, now
        ),
        "analysisRun": run.to_status() if run.stage else None,
        "analysis": records or None,
        "analysisCheck": check.to_status(),
        "gates": shown_gates or None,
        "checklist": shown_checklist or None,
        "commands": bounded(acks),
        "rejected": None,
        "traffic": planned.status or replica_traffic(rollout, spec, observed.deployments),
        "announced": announce(
            spec.plan if rollout.override is None else None,
            rollout.revision,
            rollout.phase is Phase.GATING,
            rollout.phase in STARTED_PHASES,
            release.status.get("announced"),
            now,
        ),
    }
    wake_at = _wake_at(release, rollout, spec, plan, evidence, now, migration_deadlines(rollout, migrations))
    later = report_later(release.status, status, rollout, now)
    if later is not None:
        status = {**status, **{key: release.status.get(key) for key in PROGRESS_DETAILS}}
        wake_at = min(wake_at, later) if wake_at is not None else later
    return Decision(status, tuple(actions), tuple(events), wake_at)


def _invalid_spec(release: ReleaseObject, rollout: Rollout, error: SpecError, now: datetime) -> Decision:
    """Hold everything as it is; nothing running is touched until the spec is fixed."""
    message = f"invalid spec: {error}"
    previous = release.status.get("conditions") or []
    already_reported = any(
        c.get("type") == "Stalled" and c.get("reason") == reasons.INVALID_SPEC and c.get("message") == message
        for c in previous
    )
    rollout = replace(rollout, message=message)
    status = {
        **rollout.to_status(),
        "observedGeneration": release.generation,
        "conditions": render_conditions(
            rollout_conditions(rollout, message), previous, release.generation, now
        ),
        "commands": release.status.get("commands"),
        "traffic": release.status.get("traffic"),  # the workloads are held as they are
        "announced": release.status.get("announced"),
    }
    events = () if already_reported else (Event("Warning", reasons.INVALID_SPEC, message),)
    return Decision(status, (), events, None)


# --- manual commands ---------------------------------------------------------------------------


def _apply_commands(
    rollout: Rollout,
    spec: ReleaseSpec,
    annotations: Mapping[str, str],
    acks: tuple[CommandAck, ...],
    observed: Observations,
    now: datetime,
    events: list[Event],
) -> tuple[Rollout, tuple[CommandAck, ...], dict[str, str]]:
    """Act on each command not yet acknowledged, and acknowledge it; every command annotation present
    (done now or before) is to be removed once the status holds its acknowledgement (core/commands.py)."""
    acks = close_removed(acks, annotations)
    consumed: dict[str, str] = {}
    applied: list[str] = []
    for key in COMMANDS:
        if key not in annotations:
            continue
        value = str(annotations[key])
        consumed[key] = value
        if is_done(acks, key, value):
            continue  # acted on by an earlier pass whose removal of the annotation did not go through
        action = key.removeprefix(f"{GROUP}/")
        if action == "promote" and ABORT in applied:
            outcome, changed = "ignored: abort given at the same time", rollout
        elif action == "abort":
            outcome, changed = _abort(rollout, spec, now)
        elif action == "rollback":
            outcome, changed = _rollback(rollout, spec, value, observed, now, events)
        elif action == "retry":
            outcome, changed = _retry(rollout, spec, now)
        else:
            outcome, changed = _promote(rollout, spec, value, now)
        rollout = changed.record_command(CommandRecord(action, value, now, outcome))
        acks = acknowledge(acks, key, value, outcome, rollout.revision, now)
        ignored = outcome.startswith("ignored")
        events.append(
            Event(
                "Warning" if ignored else "Normal", reasons.command_event(action), f"{key}={value}: {outcome}"
            )
        )
        applied.append(key)
    return rollout, acks, consumed


def _abort(rollout: Rollout, spec: ReleaseSpec, now: datetime) -> tuple[str, Rollout]:
    if rollout.phase not in IN_FLIGHT | PROMOTED | {Phase.FAILED}:
        return f"ignored: nothing to abort in phase {rollout.phase.value}", rollout
    if rollout.has_stable and rollout.revision == rollout.stable_revision:
        return f"ignored: revision {rollout.revision} is already the stable revision", rollout
    if not rollout.has_stable:
        message = f"aborted; revision {rollout.revision} is the first, there is nothing to roll back to"
        failed = rollout.finish("Failed", reasons.ABORTED, now, message)
        return "failed: nothing to roll back to", _enter(
            failed, Phase.FAILED, reasons.ABORTED, now, message=message
        )
    return "rolling back", _roll_back(rollout, reasons.ABORTED, "aborted by shepherd.dev/abort", now)


def _retry(rollout: Rollout, spec: ReleaseSpec, now: datetime) -> tuple[str, Rollout]:
    if rollout.phase not in STALLED:
        return (
            f"ignored: only a RolledBack or Failed revision can be retried, not {rollout.phase.value}",
            rollout,
        )
    attempt = rollout.attempt + 1
    limit = spec.revision_history_limit
    override = rollout.override
    origin = override.rollback_of if override is not None and override.revision == rollout.revision else None
    restarted = rollout.start(
        rollout.revision, attempt, rollout.version, rollout.revision_hash, now, limit, origin
    )
    return f"attempt {attempt}", restarted


def _rollback(
    rollout: Rollout,
    spec: ReleaseSpec,
    value: str,
    observed: Observations,
    now: datetime,
    events: list[Event],
) -> tuple[str, Rollout]:
    """A new revision with a recorded revision's content, through the same gates, steps and bake."""
    target = rollback_target(rollout, value, observed.revisions)
    if isinstance(target, str):
        return target, rollout
    number, content = target
    started = start_revision(rollout, spec, content, now, events, rollback_of=number)
    # The spec still holds other content: the recorded one stands in for it until the spec changes.
    spec_hash = content_of(spec).hash
    override = Override(started.revision, number, spec_hash) if content.hash != spec_hash else None
    return (
        f"rolling back to revision {number} ({content.version}) as revision {started.revision}",
        replace(started, override=override),
    )


def _promote(rollout: Rollout, spec: ReleaseSpec, value: str, now: datetime) -> tuple[str, Rollout]:
    full = value.strip().lower() == "full"
    if rollout.phase is Phase.BAKING or (
        rollout.phase is Phase.FAILED and rollout.reason == reasons.BAKE_FAILED
    ):
        return "bake skipped", _succeed(rollout, spec, now)
    if rollout.phase is Phase.FAILED and rollout.reason in reasons.ANALYSIS_REASONS:
        entry = rollout.update_current_entry(result="InProgress", finished_at=None, message="")
        resumed = _enter(entry, Phase.PROGRESSING, reasons.PROMOTED, now)
        return f"failed analysis at step {rollout.current_step + 1} overridden", _next_step(resumed, now)
    if rollout.phase is Phase.GATING:
        return "ignored: gates decide when a revision starts; a promote cannot skip them", rollout
    if rollout.phase is Phase.MIGRATING:
        return "ignored: migrations must succeed before traffic moves; a promote cannot skip them", rollout
    if rollout.phase not in IN_FLIGHT:
        return f"ignored: nothing to promote in phase {rollout.phase.value}", rollout
    if spec.paused:
        return "ignored: spec.paused is true; set it to false first", rollout
    if full or not rollout.is_canary:
        return ALL_STEPS_SKIPPED, replace(rollout, current_step=len(spec.steps), step_since=now)
    if rollout.current_step >= len(spec.steps):
        return "ignored: no step left to skip", rollout
    step = rollout.current_step
    return f"step {step + 1} skipped", _next_step(rollout, now)


# --- the machine -------------------------------------------------------------------------------


def _plan(
    release: ReleaseObject,
    rollout: Rollout,
    spec: ReleaseSpec,
    content: RevisionContent,
    observed: Observations,
) -> TrafficPlan:
    stable = (
        content if rollout.stable_hash == content.hash else observed.revisions.get(rollout.stable_revision)
    )
    # Each revision's templates name its own hashed ConfigMaps: the stable keeps its config, the canary
    # gets the new one.
    desired = desired_deployments(
        rollout, spec, rendered(content), rendered(stable) if stable is not None else None
    )
    deadline_seconds = max(1, int(spec.progress_deadline.total_seconds()))
    plan = plan_workloads(release.ref, desired, observed.deployments, deadline_seconds)
    in_use = contents_in_use(desired or (), {rollout.revision: content, rollout.stable_revision: stable})
    plan = with_config(plan, release.ref, in_use, observed.config_maps)
    return plan_traffic(
        plan, release.ref, rollout, spec, observed.routes, observed.services, observed.deployments
    )


def _unused_config(
    retained: Collection[int], content: RevisionContent, observed: Observations
) -> list[DeleteConfigMap]:
    """ConfigMaps go with the last revision that names them: deleted in the pass that trims its record."""
    kept = [content, *(c for number, c in observed.revisions.items() if number in retained)]
    return unused_config_maps(kept, observed.config_maps, observed.deployments)


def _migrations(
    release: ReleaseObject,
    rollout: Rollout,
    spec: ReleaseSpec,
    content: RevisionContent,
    evidence: Evidence,
    observed: Observations,
    now: datetime,
) -> MigrationInputs:
    """The migrations of the revision in flight (recorded, when the spec has moved on) and what holds them."""
    in_flight = content if rollout.revision_hash == content.hash else observed.revisions.get(rollout.revision)
    closed = closed_windows(evidence.gate_specs, now)
    held = None
    if spec.paused:
        held = "spec.paused is true"
    elif evidence.freezes:
        held = evidence.freezes[0].describe()
    elif closed:
        held = f"window {closed[0].name} is closed"
    return MigrationInputs(release.ref, in_flight.migrations if in_flight else (), observed.jobs, held)


def _track_readiness(rollout: Rollout, plan: WorkloadPlan, now: datetime) -> Rollout:
    """The progress deadline counts from the moment workloads stopped matching the plan."""
    if plan.converged:
        return replace(rollout, unready_since=None) if rollout.unready_since else rollout
    return rollout if rollout.unready_since else replace(rollout, unready_since=now)


def _advance(
    rollout: Rollout,
    spec: ReleaseSpec,
    order: Waves,
    plan: WorkloadPlan,
    evidence: Evidence,
    migrations: MigrationInputs,
    now: datetime,
    events: list[Event],
) -> Rollout:
    phase = rollout.phase
    # Migrations run after the gates and before any traffic moves.
    starting = Phase.MIGRATING if migrations.migrations else Phase.PROGRESSING
    if phase is Phase.PENDING:
        if spec.paused or not evidence.check.ready:
            return rollout
        if evidence.gates:
            return _enter(rollout, Phase.GATING, reasons.WAITING_FOR_GATES, now, events)
        return _enter(rollout, starting, reasons.STARTED, now, events)
    if phase is Phase.GATING:
        return rollout if spec.paused else _gate(rollout, starting, evidence, now, events)
    if phase is Phase.MIGRATING:
        return _migrate(rollout, migrations, now, events)
    # Returning to the stable revision has nothing older to fall back to: it keeps converging like a rollback.
    returning_to_stable = rollout.has_stable and rollout.revision == rollout.stable_revision
    if phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.BAKING) and not returning_to_stable:
        failure = _failure(rollout, spec, plan, now)
        if failure is not None:
            return _fail(rollout, spec, failure, now, events)
    if phase in (Phase.PROGRESSING, Phase.PAUSED):
        return _progress(rollout, spec, order, plan, evidence, now, events)
    if phase is Phase.PROMOTING and plan.converged:
        return _promoted(rollout, spec, now, events)
    if phase is Phase.BAKING:
        judged = stage_verdict(rollout, spec, evidence.run, now)
        if judged.state == "Failed":
            return _fail(rollout, spec, (reasons.BAKE_FAILED, judged.message), now, events)
        done = judged.state == "Passed" and baked(rollout, spec, now)
        return _succeed(rollout, spec, now, events) if done else rollout
    if phase is Phase.ROLLING_BACK and plan.converged:
        if rollout.wave > 0:
            return _previous_wave(rollout, order, now, events)
        # Down migrations only once no pod runs the new code: the old code works on either schema.
        down = migrate_down(rollout, migrations, now, events)
        if down.failure is not None:
            return _migration_failed(
                down.rollout, reasons.ROLLBACK_MIGRATION_FAILED, down.failure, now, events
            )
        if not down.done:
            return down.rollout
        rollout = down.rollout
        entry = rollout.history[-1] if rollout.history else None
        message = entry.message if entry else rollout.message
        finished = rollout.finish("RolledBack", rollout.reason, now, message)
        return _enter(finished, Phase.ROLLED_BACK, rollout.reason, now, events, message=message)
    return rollout


def _progress(
    rollout: Rollout,
    spec: ReleaseSpec,
    order: Waves,
    plan: WorkloadPlan,
    evidence: Evidence,
    now: datetime,
    events: list[Event],
) -> Rollout:
    if spec.paused:
        if rollout.phase is Phase.PAUSED and rollout.reason == reasons.SPEC_PAUSED:
            return rollout
        return _enter(rollout, Phase.PAUSED, reasons.SPEC_PAUSED, now, events)
    hold = _hold(evidence, now)
    if hold is not None:
        # A freeze or a closed window holds traffic where it is; only a rollback may still move it.
        reason, record = hold
        if rollout.phase is Phase.PAUSED and rollout.reason == reason:
            return rollout
        held = rollout.update_current_entry(holds=(*_current_holds(rollout), record))
        return _enter(held, Phase.PAUSED, reason, now, events, keep_clock=True)
    step = spec.steps[rollout.current_step] if rollout.current_step < len(spec.steps) else None
    at_manual_pause = isinstance(step, Pause) and step.duration is None and rollout.is_canary
    if rollout.phase is Phase.PAUSED:
        if at_manual_pause and rollout.reason == reasons.CANARY_PAUSE_STEP:
            return rollout
        return _enter(rollout, Phase.PROGRESSING, reasons.RESUMED, now, events, keep_clock=True)
    if not plan.converged:
        return rollout
    if not rollout.is_canary or step is None:
        if rollout.wave + 1 < len(order):
            return _next_wave(rollout, spec, order, now, events)
        if not rollout.is_canary:
            return _promoted(rollout, spec, now, events)
        return _enter(
            replace(rollout, canary_weight=100),
            Phase.PROMOTING,
            reasons.STEPS_COMPLETED,
            now,
            events,
            unready=True,
        )
    if isinstance(step, SetWeight):
        if rollout.canary_weight < step.weight:
            # No Event per step: the status write records it (currentStep, canaryWeight, stepSince), and
            # Events mark what a person follows: revisions, phases and commands.
            return replace(rollout, canary_weight=step.weight, unready_since=now)
        return _next_step(rollout, now)
    if isinstance(step, AnalysisStep):
        judged = stage_verdict(rollout, spec, evidence.run, now)
        if judged.state == "Failed":
            return _fail(rollout, spec, (judged.reason, judged.message), now, events)
        return _next_step(rollout, now) if judged.state == "Passed" else rollout
    if isinstance(step, SetCanaryScale | SetHeaderRoute):
        return _next_step(rollout, now)  # the plan that converged was made with this step in effect
    if step.duration is None:
        return _enter(rollout, Phase.PAUSED, reasons.CANARY_PAUSE_STEP, now, events, keep_clock=True)
    if rollout.step_since is not None and now >= rollout.step_since + step.duration:
        return _next_step(rollout, now)
    return rollout


def _gate(
    rollout: Rollout, starting: Phase, evidence: Evidence, now: datetime, events: list[Event]
) -> Rollout:
    """All gates pass together before any traffic moves; a gate that fails, or is still pending past
    its timeout, fails the revision."""
    waiting = [result for result in evidence.gates if result.state != "Passed"]
    if not waiting:
        passed = tuple(audit(result, now) for result in evidence.gates)
        return _enter(rollout.update_current_entry(gates=passed), starting, reasons.GATES_PASSED, now, events)
    timeouts = {gate.name: gate.timeout for gate in evidence.gate_specs if gate.timeout is not None}
    for result in waiting:
        timeout = timeouts.get(result.name)
        why = None
        if result.state == "Failed":
            why = f"gate {result.name} failed: {result.message}"
        elif timeout is not None and rollout.phase_since is not None and now >= rollout.phase_since + timeout:
            why = (
                f"gate {result.name} did not pass within its timeout {format_duration(timeout)}: "
                f"{result.message}"
            )
        if why is not None:
            message = f"revision {rollout.revision} ({rollout.version}) failed: {why}"
            failed = rollout.finish("Failed", reasons.GATE_FAILED, now, message)
            return _enter(failed, Phase.FAILED, reasons.GATE_FAILED, now, events, message=message)
    return rollout


def _migrate(rollout: Rollout, migrations: MigrationInputs, now: datetime, events: list[Event]) -> Rollout:
    step = migrate(rollout, migrations, now, events)
    if step.failure is not None:
        return _migration_failed(step.rollout, reasons.MIGRATION_FAILED, step.failure, now, events)
    return (
        _enter(step.rollout, Phase.PROGRESSING, reasons.MIGRATED, now, events) if step.done else step.rollout
    )


def _migration_failed(
    rollout: Rollout, reason: str, detail: str, now: datetime, events: list[Event]
) -> Rollout:
    """Held as Failed: a failed migration moved no traffic; a failed down migration needs a person."""
    revision = f"revision {rollout.revision} ({rollout.version})"
    if reason == reasons.MIGRATION_FAILED:
        serving = (
            f"revision {rollout.stable_revision} keeps serving" if rollout.has_stable else "nothing deployed"
        )
        message = f"{revision} failed: {detail}; no traffic moved, {serving}"
    else:
        message = (
            f"{revision} rolled back to revision {rollout.stable_revision}, but {detail}; "
            f"repair the schema, then annotate {ABORT} to finish the rollback without it"
        )
    failed = rollout.finish("Failed", reason, now, message)
    return _enter(failed, Phase.FAILED, reason, now, events, message=message)


def _hold(evidence: Evidence, now: datetime) -> tuple[str, dict[str, Any]] | None:
    if evidence.freezes:
        freeze = evidence.freezes[0]
        return reasons.FREEZE, {"policy": freeze.policy, "freeze": freeze.reason, "at": format_time(now)}
    closed = closed_windows(evidence.gate_specs, now)
    if closed:
        return reasons.WINDOW, {"gate": closed[0].name, "at": format_time(now)}
    return None


def _current_holds(rollout: Rollout) -> tuple[Mapping[str, Any], ...]:
    entry = rollout.history[-1] if rollout.history else None
    return entry.holds if entry is not None and entry.revision == rollout.revision else ()


def _next_step(rollout: Rollout, now: datetime) -> Rollout:
    return replace(rollout, current_step=rollout.current_step + 1, step_since=now)


def _next_wave(
    rollout: Rollout, spec: ReleaseSpec, order: Waves, now: datetime, events: list[Event]
) -> Rollout:
    """The wave that finished its steps is promoted; the next one's canary starts once that is ready.

    The first revision has no canary: each wave is deployed, and ready, before the next.
    """
    done, following = wave_label(rollout.wave, order), wave_label(rollout.wave + 1, order)
    if rollout.is_canary:
        detail = f"{done} completed its steps: promoting it; {following} starts its canary once it is ready"
    else:
        detail = f"{done} is ready; deploying {following}"
    events.append(Event("Normal", reasons.WAVE, f"revision {rollout.revision}: {detail}"))
    # A promote=full of this attempt skips the steps of every later wave too.
    skipped = rollout.is_canary and _all_steps_skipped(rollout)
    return replace(
        rollout,
        wave=rollout.wave + 1,
        canary_weight=0,
        current_step=len(spec.steps) if skipped else 0,
        step_since=now,
        unready_since=now,
    )


def _previous_wave(rollout: Rollout, order: Waves, now: datetime, events: list[Event]) -> Rollout:
    back, following = wave_label(rollout.wave, order), wave_label(rollout.wave - 1, order)
    events.append(
        Event(
            "Warning",
            reasons.WAVE,
            f"revision {rollout.revision}: {back} is rolled back; rolling back {following}",
        )
    )
    return replace(rollout, wave=rollout.wave - 1, unready_since=now)


def _all_steps_skipped(rollout: Rollout) -> bool:
    entry = rollout.history[-1] if rollout.history else None
    if entry is None or (entry.revision, entry.attempt) != (rollout.revision, rollout.attempt):
        return False
    return any(c.action == "promote" and c.outcome == ALL_STEPS_SKIPPED for c in entry.commands)


def _failure(
    rollout: Rollout, spec: ReleaseSpec, plan: WorkloadPlan, now: datetime
) -> tuple[str, str] | None:
    if plan.failure is not None:
        return reasons.PROGRESS_DEADLINE_EXCEEDED, plan.failure
    if plan.converged or rollout.unready_since is None:
        return None
    if now >= rollout.unready_since + spec.progress_deadline:
        waiting = ", ".join(plan.waiting_on) or "workloads"
        return (
            reasons.PROGRESS_DEADLINE_EXCEEDED,
            f"not ready within progressDeadline {format_duration(spec.progress_deadline)}: {waiting}",
        )
    return None


def _fail(
    rollout: Rollout, spec: ReleaseSpec, failure: tuple[str, str], now: datetime, events: list[Event]
) -> Rollout:
    reason, detail = failure
    can_roll_back = rollout.has_stable and rollout.revision != rollout.stable_revision
    if can_roll_back and spec.automatic_rollback:
        return _roll_back(rollout, reason, detail, now, events)
    if can_roll_back:
        why = "rollback.automatic is false: annotate shepherd.dev/abort, or fix and retry"
    else:
        why = "it is the first revision, there is nothing to roll back to"
    message = f"revision {rollout.revision} failed: {detail}; {why}"
    failed = rollout.finish("Failed", reason, now, message)
    return _enter(failed, Phase.FAILED, reason, now, events, message=message)


def _roll_back(
    rollout: Rollout, reason: str, detail: str, now: datetime, events: list[Event] | None = None
) -> Rollout:
    message = f"revision {rollout.revision} ({rollout.version}) rolled back: {detail}"
    entry_noted = rollout.update_current_entry(message=message)
    return _enter(
        replace(entry_noted, canary_weight=0),
        Phase.ROLLING_BACK,
        reason,
        now,
        events,
        message=message,
        unready=True,
    )


def _promoted(rollout: Rollout, spec: ReleaseSpec, now: datetime, events: list[Event]) -> Rollout:
    if spec.bake is not None and rollout.revision != rollout.stable_revision:
        return _enter(replace(rollout, canary_weight=100), Phase.BAKING, reasons.PROMOTED, now, events)
    return _succeed(rollout, spec, now, events)


def _succeed(
    rollout: Rollout, spec: ReleaseSpec, now: datetime, events: list[Event] | None = None
) -> Rollout:
    finished = rollout.finish("Succeeded", reasons.SUCCEEDED, now)
    stable = replace(
        finished,
        stable_revision=rollout.revision,
        stable_hash=rollout.revision_hash,
        stable_version=rollout.version,
        canary_weight=100,
        current_step=len(spec.steps),
    )
    return _enter(stable, Phase.SUCCEEDED, reasons.SUCCEEDED, now, events)


def _enter(
    rollout: Rollout,
    phase: Phase,
    reason: str,
    now: datetime,
    events: list[Event] | None = None,
    *,
    message: str | None = None,
    keep_clock: bool = False,
    unready: bool = False,
) -> Rollout:
    entered = replace(
        rollout,
        phase=phase,
        reason=reason,
        message=message if message is not None else rollout.message,
        phase_since=rollout.phase_since if keep_clock else now,
        unready_since=now if unready else rollout.unready_since,
    )
    if events is not None:
        warning = phase in WARNING_PHASES
        detail = message or f"revision {rollout.revision} ({rollout.version})"
        events.append(Event("Warning" if warning else "Normal", phase.value, f"{reason}: {detail}"))
    return entered


# --- reporting ---------------------------------------------------------------------------------


def _polled_gates(evidence: Evidence, now: datetime) -> list[datetime]:
    """Prometheus and webhooks change without telling anyone: ask again soon, at once for a first
    answer. A gate that passed is not asked again."""
    pending = {r.name: r.message for r in evidence.gates if r.state == "Pending"}
    moments = []
    for gate in evidence.gate_specs:
        if gate.name not in pending:
            continue
        if isinstance(gate.kind, MetricGate):
            interval = METRIC_GATE_POLL
        elif isinstance(gate.kind, WebhookGate):
            interval = gate.kind.interval
        else:
            continue
        moments.append(now if pending[gate.name].startswith("waiting for") else now + interval)
    return moments


def _wake_at(
    release: ReleaseObject,
    rollout: Rollout,
    spec: ReleaseSpec,
    plan: WorkloadPlan,
    evidence: Evidence,
    now: datetime,
    deadlines: list[datetime],
) -> datetime | None:
    """The next moment the decision could change without any watch event (migration timeouts included)."""
    moments: list[datetime] = list(deadlines)
    if rollout.phase in (Phase.GATING, Phase.MIGRATING, Phase.PROGRESSING, Phase.PAUSED):
        gates = evidence.gate_specs
        moments.extend(next_window_change(g.kind, now) for g in gates if isinstance(g.kind, WindowGate))
        moments.extend(freeze_changes(evidence.policies, now))
    starts = spec.plan.not_before if spec.plan else None
    if rollout.phase is Phase.GATING and starts is not None and starts > now:
        moments.append(starts)  # a ready revision starts at once at its time
        remind = reminder_at(spec.plan)
        if remind is not None and remind > now:
            moments.append(remind)
    if rollout.phase is Phase.GATING and Rollout.from_status(release.status).phase is not Phase.GATING:
        moments.append(now)  # the shell reads approvals and dependencies only for a Release already gating
    if rollout.phase is Phase.GATING and rollout.phase_since is not None:
        moments.extend(rollout.phase_since + g.timeout for g in evidence.gate_specs if g.timeout is not None)
        moments.extend(_polled_gates(evidence, now))
    if rollout.phase is Phase.PENDING and not spec.paused and evidence.check.waiting:
        # Queries get checked on the next pass; if Prometheus could not be reached, try again shortly.
        unreachable = evidence.check.waiting.startswith("waiting for Prometheus")
        moments.append(now + RECHECK_PROMETHEUS if unreachable else now)
    stage = current_stage(rollout, spec)
    if stage is not None:
        due = due_measurements(rollout, spec, evidence.run, (release.namespace, release.name), now)
        measured_at = next_measurement_at(rollout, spec, evidence.run)
        moments.append(now if due or measured_at is None else measured_at)
    watched = rollout.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.BAKING)
    if watched and not plan.converged and rollout.unready_since is not None:
        moments.append(rollout.unready_since + spec.progress_deadline)
    if rollout.phase is Phase.PROGRESSING and plan.converged and rollout.current_step < len(spec.steps):
        step = spec.steps[rollout.current_step]
        if isinstance(step, Pause) and step.duration is not None and rollout.step_since is not None:
            moments.append(rollout.step_since + step.duration)
    if rollout.phase is Phase.BAKING and spec.bake is not None and rollout.phase_since is not None:
        moments.append(rollout.phase_since + spec.bake)
    return min(moments) if moments else None
