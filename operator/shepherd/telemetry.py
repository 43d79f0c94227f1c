"""What a reconcile changed, as metric observations: pure, from the status before and after.

Besides the operator's own health, these are the DORA metrics only a release
operator can measure exactly: deployment frequency (revisions that succeeded),
change failure rate (rollbacks over revisions), lead time for changes (from the
`shepherd.dev/committed-at` annotation a CI sets to Succeeded) and time to
restore (from the failure detected to the rollback complete).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shepherd.core.timefmt import parse_time
from shepherd.core.workloads import GROUP

COMMITTED_AT = f"{GROUP}/committed-at"


@dataclass(frozen=True)
class Observed:
    """Increments and observations one reconcile produced for one Release."""

    phase: str | None = None
    entered: tuple[str, ...] = ()  # phases entered
    revisions_started: int = 0
    deployed: int = 0  # revisions that reached Succeeded
    rollbacks: tuple[str, ...] = ()  # reasons of revisions that started rolling back
    rollout_seconds: tuple[tuple[str, float], ...] = ()  # (result, startedAt -> finishedAt)
    lead_time_seconds: tuple[float, ...] = ()
    restore_seconds: tuple[float, ...] = ()
    measurements: tuple[tuple[str, str], ...] = ()  # (metric, result)
    latest_values: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (metric, role) -> value


def observe(old: Mapping[str, Any], new: Mapping[str, Any], annotations: Mapping[str, str]) -> Observed:
    old_phase, new_phase = old.get("phase"), new.get("phase")
    changed = old_phase != new_phase
    old_entries = {(h.get("revision"), h.get("attempt")): h for h in old.get("history") or []}
    started = [
        h for h in new.get("history") or [] if (h.get("revision"), h.get("attempt")) not in old_entries
    ]
    finished = [
        h
        for h in new.get("history") or []
        if h.get("finishedAt")
        and not old_entries.get((h.get("revision"), h.get("attempt")), {}).get("finishedAt")
    ]
    old_records = {(r.get("metric"), r.get("at"), r.get("component")) for r in old.get("analysis") or []}
    records = [
        r
        for r in new.get("analysis") or []
        if (r.get("metric"), r.get("at"), r.get("component")) not in old_records
    ]
    succeeded = changed and new_phase == "Succeeded" and new.get("revision") != old.get("stableRevision")
    return Observed(
        phase=str(new_phase) if new_phase else None,
        entered=(str(new_phase),) if changed and new_phase else (),
        revisions_started=len(started),
        deployed=int(succeeded),
        rollbacks=(str(new.get("reason") or ""),) if changed and new_phase == "RollingBack" else (),
        rollout_seconds=tuple(
            (str(h.get("result")), _seconds(h.get("startedAt"), h.get("finishedAt"))) for h in finished
        ),
        lead_time_seconds=_lead_time(annotations, new) if succeeded else (),
        restore_seconds=(_seconds(old.get("phaseSince"), new.get("phaseSince")),)
        if changed and old_phase == "RollingBack" and new_phase == "RolledBack"
        else (),
        measurements=tuple((str(r.get("metric")), str(r.get("result"))) for r in records),
        latest_values={
            (str(r.get("metric")), str(r.get("role"))): float(r["value"])
            for r in records
            if isinstance(r.get("value"), int | float)
        },
    )


def _seconds(start: Any, end: Any) -> float:
    began, ended = parse_time(start), parse_time(end)
    if began is None or ended is None:
        return 0.0
    return max(0.0, (ended - began).total_seconds())


def _lead_time(annotations: Mapping[str, str], new: Mapping[str, Any]) -> tuple[float, ...]:
    committed = parse_time(annotations.get(COMMITTED_AT))
    succeeded_at: datetime | None = parse_time(new.get("phaseSince"))
    if committed is None or succeeded_at is None:
        return ()
    return (max(0.0, (succeeded_at - committed).total_seconds()),)
