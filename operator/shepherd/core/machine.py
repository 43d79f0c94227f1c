"""The phase machine: `decide(release, observed, now)` -> what to write and do.

Pure: no I/O, no clock. The shell reads the Release and its Deployments and
ControllerRevisions, calls `decide`, applies the actions in order, posts the
events, writes the status, and calls again on the next change or at `wake_at`.

    Pending -> Progressing -> (Paused) -> Promoting -> Baking -> Succeeded
                   |                         |           |
                   +-----> RollingBack <-----+-----------+  -> RolledBack
    First revision: Pending -> Progressing (all replicas, no canary) -> Baking -> Succeeded.
    Failure with nothing to roll back to, or with `rollback.automatic: false`: Failed (held).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from shepherd.core.actions import Action, DeleteRevision, Event, RecordRevision, RemoveAnnotations
from shepherd.core.spec import (
    Pause,
    ReleaseSpec,
    RevisionContent,
    SetWeight,
    SpecError,
    content_of,
    parse_release_name,
    parse_spec,
)
from shepherd.core.status import (
    IN_FLIGHT,
    PROMOTED,
    STALLED,
    CommandRecord,
    HistoryEntry,
    Phase,
    Rollout,
    render_conditions,
    rollout_conditions,
)
from shepherd.core.workloads import (
    API_VERSION,
    GROUP,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REVISION_LABEL,
    ReleaseRef,
    WorkloadPlan,
    desired_deployments,
    plan_workloads,
)

PROMOTE = f"{GROUP}/promote"
ABORT = f"{GROUP}/abort"
RETRY = f"{GROUP}/retry"
COMMANDS = (ABORT, RETRY, PROMOTE)  # abort first: it wins over a promote given at the same time
REVISION_HASH_ANNOTATION = f"{GROUP}/content-hash"
MAX_TRANSITIONS_PER_DECISION = 16


@dataclass(frozen=True)
class ReleaseObject:
    name: str
    namespace: str
    uid: str
    generation: int
    annotations: Mapping[str, str]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @property
    def ref(self) -> ReleaseRef:
        return ReleaseRef(self.name, self.namespace, self.uid)


@dataclass(frozen=True)
class Observations:
    deployments: Mapping[str, Mapping[str, Any]]  # live Deployments owned by the Release, by name
    revisions: Mapping[int, RevisionContent]  # recorded revisions (ControllerRevisions), by number


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    actions: tuple[Action, ...]
    events: tuple[Event, ...]
    wake_at: datetime | None


def decide(release: ReleaseObject, observed: Observations, now: datetime) -> Decision:
    rollout = Rollout.from_status(release.status)
    try:
        parse_release_name(release.name)
        spec = parse_spec(release.spec)
    except SpecError as error:
        return _invalid_spec(release, rollout, error, now)
    content = content_of(spec)
    events: list[Event] = []

    rollout = _select_revision(rollout, spec, content, now, events)
    rollout, consumed = _apply_commands(rollout, spec, release.annotations, now, events)

    plan = _plan(release, rollout, spec, content, observed)
    for _ in range(MAX_TRANSITIONS_PER_DECISION):
        following = _advance(_track_readiness(rollout, plan, now), spec, plan, now, events)
        if following == rollout:
            break
        rollout = following
        plan = _plan(release, rollout, spec, content, observed)
    rollout = replace(rollout, message=_describe(rollout, spec, plan, now))

    actions: list[Action] = []
    if consumed:
        actions.append(RemoveAnnotations(consumed))
    actions.extend(_revision_records(release, rollout, spec, content, observed))
    actions.extend(plan.actions)
    status = {
        **rollout.to_status(),
        "observedGeneration": release.generation,
        "conditions": render_conditions(
            rollout_conditions(rollout, None),
            release.status.get("conditions") or [],
            release.generation,
            now,
        ),
    }
    return Decision(status, tuple(actions), tuple(events), _wake_at(rollout, spec, plan))


def _invalid_spec(release: ReleaseObject, rollout: Rollout, error: SpecError, now: datetime) -> Decision:
    """Hold everything as it is; nothing running is touched until the spec is fixed."""
    message = f"invalid spec: {error}"
    previous = release.status.get("conditions") or []
    already_reported = any(
        c.get("type") == "Stalled" and c.get("reason") == "InvalidSpec" and c.get("message") == message
        for c in previous
    )
    rollout = replace(rollout, message=message)
    status = {
        **rollout.to_status(),
        "observedGeneration": release.generation,
        "conditions": render_conditions(
            rollout_conditions(rollout, message), previous, release.generation, now
        ),
    }
    events = () if already_reported else (Event("Warning", "InvalidSpec", message),)
    return Decision(status, (), events, None)


# --- revisions ---------------------------------------------------------------------------------


def _select_revision(
    rollout: Rollout, spec: ReleaseSpec, content: RevisionContent, now: datetime, events: list[Event]
) -> Rollout:
    """Every change of content is a new revision; it supersedes whatever is in flight."""
    new_hash = content.hash
    if rollout.revision and new_hash == rollout.revision_hash:
        return rollout
    limit = spec.revision_history_limit
    if rollout.has_stable and new_hash == rollout.stable_hash:
        rollout = _finish(rollout, "Superseded", "RevertedToStable", now, limit)
        events.append(
            Event(
                "Normal",
                "Reverted",
                f"spec matches stable revision {rollout.stable_revision} again: restoring it",
            )
        )
        return replace(
            rollout,
            phase=Phase.PROMOTING,
            reason="Reverted",
            revision=rollout.stable_revision,
            revision_hash=rollout.stable_hash,
            version=rollout.stable_version,
            attempt=1,
            canary_weight=100,
            current_step=len(spec.steps),
            phase_since=now,
            unready_since=None,
        )
    if rollout.phase in PROMOTED:
        # The stable Deployments already run the superseded revision: it becomes the baseline.
        rollout = replace(
            rollout,
            stable_revision=rollout.revision,
            stable_hash=rollout.revision_hash,
            stable_version=rollout.version,
        )
    if rollout.phase is Phase.ROLLING_BACK:
        rollout = _finish(rollout, "RolledBack", rollout.reason, now, limit, rollout.message)
    elif rollout.revision:
        rollout = _finish(rollout, "Superseded", "NewRevision", now, limit)
    number = max(rollout.latest_revision, rollout.revision) + 1
    events.append(Event("Normal", "NewRevision", f"revision {number} ({content.version}) detected"))
    return _start(rollout, number, 1, content.version, content.hash, now, limit)


def _start(
    rollout: Rollout, number: int, attempt: int, version: str, content_hash: str, now: datetime, limit: int
) -> Rollout:
    started = replace(
        rollout,
        phase=Phase.PENDING,
        reason="NewRevision",
        revision=number,
        revision_hash=content_hash,
        version=version,
        latest_revision=max(rollout.latest_revision, number),
        attempt=attempt,
        canary_weight=0,
        current_step=0,
        phase_since=now,
        step_since=now,
        unready_since=None,
    )
    return started.with_history(HistoryEntry(number, version, attempt, "InProgress", "", now), limit)


def _finish(
    rollout: Rollout, result: str, reason: str, now: datetime, limit: int, message: str = ""
) -> Rollout:
    """Close the current revision's history entry, once."""
    if not rollout.history or rollout.history[-1].result != "InProgress":
        return rollout
    return rollout.update_current_entry(result=result, reason=reason, finished_at=now, message=message)


def _revision_records(
    release: ReleaseObject,
    rollout: Rollout,
    spec: ReleaseSpec,
    content: RevisionContent,
    observed: Observations,
) -> list[Action]:
    actions: list[Action] = []
    if (
        rollout.revision
        and rollout.revision not in observed.revisions
        and rollout.revision_hash == content.hash
    ):
        actions.append(RecordRevision(revision_record(release, rollout.revision, content)))
    keep = sorted(observed.revisions, reverse=True)[: spec.revision_history_limit]
    protected = {rollout.revision, rollout.stable_revision}
    for number in sorted(observed.revisions):
        if number not in keep and number not in protected:
            actions.append(DeleteRevision(revision_record_name(release.name, number)))
    return actions


def revision_record_name(release: str, number: int) -> str:
    return f"{release}-{number}"


def revision_record(release: ReleaseObject, number: int, content: RevisionContent) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_record_name(release.name, number),
            "namespace": release.namespace,
            "labels": {
                INSTANCE_LABEL: release.name,
                MANAGED_BY_LABEL: MANAGED_BY,
                REVISION_LABEL: str(number),
            },
            "annotations": {REVISION_HASH_ANNOTATION: content.hash},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Release",
                    "name": release.name,
                    "uid": release.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "revision": number,
        "data": content.to_dict(),
    }


# --- manual commands ---------------------------------------------------------------------------


def _apply_commands(
    rollout: Rollout,
    spec: ReleaseSpec,
    annotations: Mapping[str, str],
    now: datetime,
    events: list[Event],
) -> tuple[Rollout, tuple[str, ...]]:
    consumed: list[str] = []
    for key in COMMANDS:
        if key not in annotations:
            continue
        value = str(annotations[key])
        action = key.removeprefix(f"{GROUP}/")
        if consumed and action == "promote" and ABORT in consumed:
            outcome, changed = "ignored: abort given at the same time", rollout
        elif action == "abort":
            outcome, changed = _abort(rollout, spec, now)
        elif action == "retry":
            outcome, changed = _retry(rollout, spec, now)
        else:
            outcome, changed = _promote(rollout, spec, value, now)
        rollout = changed.record_command(CommandRecord(action, value, now, outcome))
        ignored = outcome.startswith("ignored")
        events.append(
            Event("Warning" if ignored else "Normal", action.capitalize(), f"{key}={value}: {outcome}")
        )
        consumed.append(key)
    return rollout, tuple(consumed)


def _abort(rollout: Rollout, spec: ReleaseSpec, now: datetime) -> tuple[str, Rollout]:
    if rollout.phase not in IN_FLIGHT | PROMOTED | {Phase.FAILED}:
        return f"ignored: nothing to abort in phase {rollout.phase.value}", rollout
    limit = spec.revision_history_limit
    if rollout.has_stable and rollout.revision == rollout.stable_revision:
        return f"ignored: revision {rollout.revision} is already the stable revision", rollout
    if not rollout.has_stable:
        message = f"aborted; revision {rollout.revision} is the first, there is nothing to roll back to"
        failed = _finish(rollout, "Failed", "Aborted", now, limit, message)
        return "failed: nothing to roll back to", _enter(
            failed, Phase.FAILED, "Aborted", now, message=message
        )
    return "rolling back", _roll_back(rollout, "Aborted", "aborted by shepherd.dev/abort", now)


def _retry(rollout: Rollout, spec: ReleaseSpec, now: datetime) -> tuple[str, Rollout]:
    if rollout.phase not in STALLED:
        return (
            f"ignored: only a RolledBack or Failed revision can be retried, not {rollout.phase.value}",
            rollout,
        )
    attempt = rollout.attempt + 1
    limit = spec.revision_history_limit
    restarted = _start(rollout, rollout.revision, attempt, rollout.version, rollout.revision_hash, now, limit)
    return f"attempt {attempt}", restarted


def _promote(rollout: Rollout, spec: ReleaseSpec, value: str, now: datetime) -> tuple[str, Rollout]:
    full = value.strip().lower() == "full"
    if rollout.phase is Phase.BAKING:
        return "bake skipped", _succeed(rollout, spec, now)
    if rollout.phase not in IN_FLIGHT:
        return f"ignored: nothing to promote in phase {rollout.phase.value}", rollout
    if spec.paused:
        return "ignored: spec.paused is true; set it to false first", rollout
    if full or not rollout.is_canary:
        return "all steps skipped", replace(rollout, current_step=len(spec.steps), step_since=now)
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
) -> WorkloadPlan:
    stable = (
        content if rollout.stable_hash == content.hash else observed.revisions.get(rollout.stable_revision)
    )
    desired = desired_deployments(rollout, spec, content, stable)
    deadline_seconds = max(1, int(spec.progress_deadline.total_seconds()))
    return plan_workloads(release.ref, desired, observed.deployments, deadline_seconds)


def _track_readiness(rollout: Rollout, plan: WorkloadPlan, now: datetime) -> Rollout:
    """The progress deadline counts from the moment workloads stopped matching the plan."""
    if plan.converged:
        return replace(rollout, unready_since=None) if rollout.unready_since else rollout
    return rollout if rollout.unready_since else replace(rollout, unready_since=now)


def _advance(
    rollout: Rollout, spec: ReleaseSpec, plan: WorkloadPlan, now: datetime, events: list[Event]
) -> Rollout:
    phase = rollout.phase
    if phase is Phase.PENDING:
        if spec.paused:
            return rollout
        return _enter(rollout, Phase.PROGRESSING, "Started", now, events)
    # Returning to the stable revision has nothing older to fall back to: it keeps converging like a rollback.
    returning_to_stable = rollout.has_stable and rollout.revision == rollout.stable_revision
    if phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.BAKING) and not returning_to_stable:
        failure = _failure(rollout, spec, plan, now)
        if failure is not None:
            return _fail(rollout, spec, failure, now, events)
    if phase in (Phase.PROGRESSING, Phase.PAUSED):
        return _progress(rollout, spec, plan, now, events)
    if phase is Phase.PROMOTING and plan.converged:
        return _promoted(rollout, spec, now, events)
    if phase is Phase.BAKING:
        baked = spec.bake is None or rollout.phase_since is None or now >= rollout.phase_since + spec.bake
        return _succeed(rollout, spec, now, events) if baked else rollout
    if phase is Phase.ROLLING_BACK and plan.converged:
        entry = rollout.history[-1] if rollout.history else None
        message = entry.message if entry else rollout.message
        finished = _finish(rollout, "RolledBack", rollout.reason, now, spec.revision_history_limit, message)
        return _enter(finished, Phase.ROLLED_BACK, rollout.reason, now, events, message=message)
    return rollout


def _progress(
    rollout: Rollout, spec: ReleaseSpec, plan: WorkloadPlan, now: datetime, events: list[Event]
) -> Rollout:
    if spec.paused:
        if rollout.phase is Phase.PAUSED and rollout.reason == "SpecPaused":
            return rollout
        return _enter(rollout, Phase.PAUSED, "SpecPaused", now, events)
    step = spec.steps[rollout.current_step] if rollout.current_step < len(spec.steps) else None
    at_manual_pause = isinstance(step, Pause) and step.duration is None and rollout.is_canary
    if rollout.phase is Phase.PAUSED:
        if at_manual_pause and rollout.reason == "CanaryPauseStep":
            return rollout
        return _enter(rollout, Phase.PROGRESSING, "Resumed", now, events, keep_clock=True)
    if not plan.converged:
        return rollout
    if not rollout.is_canary or step is None:
        if not rollout.is_canary:
            return _promoted(rollout, spec, now, events)
        return _enter(
            replace(rollout, canary_weight=100), Phase.PROMOTING, "StepsCompleted", now, events, unready=True
        )
    if isinstance(step, SetWeight):
        if rollout.canary_weight < step.weight:
            events.append(
                Event(
                    "Normal",
                    "CanaryWeight",
                    f"canary weight {step.weight}% (step {rollout.current_step + 1}/{len(spec.steps)})",
                )
            )
            return replace(rollout, canary_weight=step.weight, unready_since=now)
        return _next_step(rollout, now)
    if step.duration is None:
        return _enter(rollout, Phase.PAUSED, "CanaryPauseStep", now, events, keep_clock=True)
    if rollout.step_since is not None and now >= rollout.step_since + step.duration:
        return _next_step(rollout, now)
    return rollout


def _next_step(rollout: Rollout, now: datetime) -> Rollout:
    return replace(rollout, current_step=rollout.current_step + 1, step_since=now)


def _failure(
    rollout: Rollout, spec: ReleaseSpec, plan: WorkloadPlan, now: datetime
) -> tuple[str, str] | None:
    if plan.failure is not None:
        return "ProgressDeadlineExceeded", plan.failure
    if plan.converged or rollout.unready_since is None:
        return None
    if now >= rollout.unready_since + spec.progress_deadline:
        waiting = ", ".join(plan.waiting_on) or "workloads"
        return (
            "ProgressDeadlineExceeded",
            f"not ready within progressDeadline {_duration(spec.progress_deadline)}: {waiting}",
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
    failed = _finish(rollout, "Failed", reason, now, spec.revision_history_limit, message)
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
        return _enter(replace(rollout, canary_weight=100), Phase.BAKING, "Promoted", now, events)
    return _succeed(rollout, spec, now, events)


def _succeed(
    rollout: Rollout, spec: ReleaseSpec, now: datetime, events: list[Event] | None = None
) -> Rollout:
    finished = _finish(rollout, "Succeeded", "Succeeded", now, spec.revision_history_limit)
    stable = replace(
        finished,
        stable_revision=rollout.revision,
        stable_hash=rollout.revision_hash,
        stable_version=rollout.version,
        canary_weight=100,
        current_step=len(spec.steps),
    )
    return _enter(stable, Phase.SUCCEEDED, "Succeeded", now, events)


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
        warning = phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED)
        detail = message or f"revision {rollout.revision} ({rollout.version})"
        events.append(Event("Warning" if warning else "Normal", phase.value, f"{reason}: {detail}"))
    return entered


# --- reporting ---------------------------------------------------------------------------------


def _describe(rollout: Rollout, spec: ReleaseSpec, plan: WorkloadPlan, now: datetime) -> str:
    revision = f"revision {rollout.revision} ({rollout.version})"
    waiting = f": waiting for {', '.join(plan.waiting_on)}" if plan.waiting_on else ""
    steps = len(spec.steps)
    phase = rollout.phase
    if phase in STALLED or phase is Phase.ROLLING_BACK:
        entry = rollout.history[-1] if rollout.history else None
        failure = entry.message if entry and entry.message else f"{revision}: {rollout.reason}"
        return failure + (waiting if phase is Phase.ROLLING_BACK else "")
    if phase is Phase.PENDING:
        return f"{revision} is waiting to start: spec.paused is true"
    if phase is Phase.SUCCEEDED:
        return f"{revision} serves all traffic"
    if phase is Phase.BAKING:
        left = _remaining(rollout.phase_since, spec.bake, now)
        return f"{revision} promoted; baking for {_duration(spec.bake)}, {left} left{waiting}"
    if phase is Phase.PROMOTING:
        return f"promoting {revision}{waiting}"
    if not rollout.is_canary:
        first = "" if rollout.has_stable else ": first revision, nothing to compare a canary against"
        prefix = "paused by spec.paused; " if phase is Phase.PAUSED else ""
        return f"{prefix}deploying {revision} to all replicas{first}{waiting}"
    where = f"step {min(rollout.current_step + 1, steps)}/{steps}, canary at {rollout.canary_weight}%"
    if phase is Phase.PAUSED and rollout.reason == "SpecPaused":
        return f"paused by spec.paused at {where}"
    if phase is Phase.PAUSED:
        return f"paused at {where} until promoted: annotate {PROMOTE}=true"
    step = spec.steps[rollout.current_step] if rollout.current_step < steps else None
    if isinstance(step, Pause) and step.duration is not None and not waiting:
        left = _remaining(rollout.step_since, step.duration, now)
        return f"{where}: pause {_duration(step.duration)}, {left} left"
    return f"{where}{waiting}"


def _remaining(since: datetime | None, length: timedelta | None, now: datetime) -> str:
    if since is None or length is None:
        return "0s"
    return _duration(max(timedelta(0), since + length - now))


def _duration(length: timedelta | None) -> str:
    seconds = round(length.total_seconds()) if length is not None else 0
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return "".join(parts) or "0s"


def _wake_at(rollout: Rollout, spec: ReleaseSpec, plan: WorkloadPlan) -> datetime | None:
    """The next moment the decision could change without any watch event."""
    moments: list[datetime] = []
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
