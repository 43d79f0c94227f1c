"""status.message: what is happening now and what is being waited for, in words; and when to write it.

A message names moments (a pause ends at 12:00:05Z), never a countdown, so that time passing alone never
calls for a status write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from shepherd.core import reasons
from shepherd.core.evidence import Evidence, stage_verdict
from shepherd.core.plan import SCHEDULE_GATE
from shepherd.core.spec import AnalysisStep, Pause, ReleaseSpec, Waves
from shepherd.core.status import STALLED, Phase, Rollout
from shepherd.core.timefmt import format_seconds
from shepherd.core.workloads import GROUP, WorkloadPlan

PROMOTE = f"{GROUP}/promote"
# What a step is waiting for, and the share of pods, change several times within a step that goes well.
# Such details are written only once the step (or phase) has lasted this long, so a smooth step costs one
# status write, and a slow one still says why it is slow.
REPORT_DELAY = timedelta(seconds=5)
PROGRESS_DETAILS = frozenset({"message", "conditions", "traffic"})
MOVING = frozenset({Phase.PROGRESSING, Phase.PROMOTING, Phase.BAKING, Phase.ROLLING_BACK})


def describe(
    rollout: Rollout,
    spec: ReleaseSpec,
    order: Waves,
    plan: WorkloadPlan,
    evidence: Evidence,
    now: datetime,
    migrations: str = "",
) -> str:
    """`migrations`: what the migration Jobs of the phase are doing, empty when none is left to run."""
    revision = f"revision {rollout.revision} ({rollout.version})"
    waiting = f": waiting for {', '.join(plan.waiting_on)}" if plan.waiting_on else ""
    wave = wave_label(rollout.wave, order) if len(order) > 1 else ""
    steps = len(spec.steps)
    phase = rollout.phase
    if phase in STALLED or phase is Phase.ROLLING_BACK:
        entry = rollout.history[-1] if rollout.history else None
        failure = entry.message if entry and entry.message else f"{revision}: {rollout.reason}"
        if phase is Phase.ROLLING_BACK:
            return failure + (waiting or (f"; {migrations}" if migrations else ""))
        return failure
    if phase is Phase.MIGRATING:
        return f"{revision}: {migrations}"
    if phase is Phase.GATING:
        pending = [gate for gate in evidence.gates if gate.state != "Passed"]
        scheduled = [f"{revision} {g.message}" for g in pending if g.name == SCHEDULE_GATE]
        others = [f"{g.name}: {g.message}" for g in pending if g.name != SCHEDULE_GATE]
        if scheduled:
            return "; ".join([*scheduled, *others])
        if others:
            return f"{revision} is waiting for its gates: " + "; ".join(others)
    if phase is Phase.PENDING:
        if spec.paused:
            return f"{revision} is waiting to start: spec.paused is true"
        return f"{revision} is waiting to start: {evidence.check.error or evidence.check.waiting}"
    if phase is Phase.SUCCEEDED:
        return f"{revision} serves all traffic"
    if phase is Phase.BAKING:
        ends = ends_at(rollout.phase_since, spec.bake)
        measuring = f"; {stage_verdict(rollout, spec, evidence.run, now).message}" if spec.analysis else ""
        return (
            f"{revision} promoted; baking for {format_duration(spec.bake)} until {ends}{measuring}{waiting}"
        )
    if phase is Phase.PROMOTING:
        return f"promoting {revision}{waiting}"
    if not rollout.is_canary:
        first = "" if rollout.has_stable else ": first revision, nothing to compare a canary against"
        prefix = "paused by spec.paused; " if phase is Phase.PAUSED else ""
        in_wave = f" in {wave}" if wave else ""
        return f"{prefix}deploying {revision} to all replicas{in_wave}{first}{waiting}"
    if wave and rollout.wave > 0 and rollout.canary_weight == 0 and waiting:
        # The previous wave's promotion: the next canary starts once it is ready.
        return f"promoting {wave_label(rollout.wave - 1, order)} before {wave} starts{waiting}"
    where = f"step {min(rollout.current_step + 1, steps)}/{steps}, canary at {rollout.canary_weight}%"
    where = f"{wave}, {where}" if wave else where
    if phase is Phase.PAUSED and rollout.reason == reasons.SPEC_PAUSED:
        return f"paused by spec.paused at {where}"
    if phase is Phase.PAUSED:
        return f"paused at {where} until promoted: annotate {PROMOTE}=true"
    step = spec.steps[rollout.current_step] if rollout.current_step < steps else None
    if isinstance(step, Pause) and step.duration is not None and not waiting:
        ends = ends_at(rollout.step_since, step.duration)
        return f"{where}: pause {format_duration(step.duration)} until {ends}"
    if isinstance(step, AnalysisStep) and not waiting:
        return f"{where}: analysis: {stage_verdict(rollout, spec, evidence.run, now).message}"
    return f"{where}{waiting}"


def wave_label(index: int, order: Waves) -> str:
    """`wave 2/3 (web, worker)`: which components move, counted from 1."""
    names = ", ".join(order[index]) if index < len(order) else ""
    return f"wave {index + 1}/{len(order)} ({names})"


def ends_at(since: datetime | None, length: timedelta | None) -> str:
    if since is None or length is None:
        return "now"
    return format_seconds(since + length)


def report_later(
    old: Mapping[str, Any], new: Mapping[str, Any], rollout: Rollout, now: datetime
) -> datetime | None:
    """When `new` differs from `old` in progress details only, while workloads move, within
    REPORT_DELAY of the step's (or phase's) start: the moment to write it, if it still differs then.
    None: write it now (or there is nothing to write). Anything else that changed (the rollout's state, a
    command's acknowledgement) is written at once, and carries the details with it."""
    if rollout.phase not in MOVING:
        return None
    changed = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    if not changed or not changed <= PROGRESS_DETAILS:
        return None
    if not _same_but_messages(old.get("conditions"), new.get("conditions")):
        return None
    started = [m for m in (rollout.phase_since, rollout.step_since, rollout.unready_since) if m is not None]
    due = max(started) + REPORT_DELAY if started else now
    return due if now < due else None


def _same_but_messages(old: Sequence[Any] | None, new: Sequence[Any] | None) -> bool:
    def without_messages(conditions: Sequence[Any] | None) -> list[Any]:
        return [
            {k: v for k, v in c.items() if k != "message"} if isinstance(c, Mapping) else c
            for c in conditions or []
        ]

    return without_messages(old) == without_messages(new)


def format_duration(length: timedelta | None) -> str:
    seconds = round(length.total_seconds()) if length is not None else 0
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return "".join(parts) or "0s"
