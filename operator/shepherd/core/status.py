"""The rollout state kept in `status`, and the kstatus conditions derived from it.

Everything the operator needs to resume after a restart lives here; nothing
is remembered in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from shepherd.core import reasons
from shepherd.core.timefmt import format_seconds, format_time, parse_time


class Phase(StrEnum):
    PENDING = "Pending"
    GATING = "Gating"
    MIGRATING = "Migrating"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    BAKING = "Baking"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


IN_FLIGHT = frozenset({Phase.PENDING, Phase.GATING, Phase.MIGRATING, Phase.PROGRESSING, Phase.PAUSED})
PROMOTED = frozenset({Phase.PROMOTING, Phase.BAKING})
STALLED = frozenset({Phase.ROLLED_BACK, Phase.FAILED})


@dataclass(frozen=True)
class CommandRecord:
    action: str
    value: str
    at: datetime
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "value": self.value,
            "at": format_time(self.at),
            "outcome": self.outcome,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CommandRecord | None:
        at = parse_time(data.get("at"))
        if at is None:
            return None
        return cls(str(data.get("action", "")), str(data.get("value", "")), at, str(data.get("outcome", "")))


@dataclass(frozen=True)
class HistoryEntry:
    """One attempt at one revision; the newest entry is last."""

    revision: int
    version: str
    attempt: int
    result: str  # InProgress | Succeeded | RolledBack | Failed | Superseded
    reason: str
    started_at: datetime
    finished_at: datetime | None = None
    message: str = ""
    commands: tuple[CommandRecord, ...] = ()
    gates: tuple[Mapping[str, Any], ...] = ()  # audit: each gate, when it passed, who approved
    holds: tuple[Mapping[str, Any], ...] = ()  # audit: windows that held the rollout, and when
    migrations: tuple[Mapping[str, Any], ...] = ()  # each migration Job run: name, job, state, times
    down_migrations: tuple[Mapping[str, Any], ...] = ()  # the rollbackTemplate Jobs run on a rollback
    rollback_of: int | None = None  # origin: started by shepherd.dev/rollback with that revision's content

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "revision": self.revision,
            "version": self.version,
            "attempt": self.attempt,
            "result": self.result,
            "reason": self.reason,
            "startedAt": format_time(self.started_at),
        }
        if self.finished_at is not None:
            data["finishedAt"] = format_time(self.finished_at)
        if self.message:
            data["message"] = self.message
        if self.commands:
            data["commands"] = [c.to_dict() for c in self.commands]
        if self.gates:
            data["gates"] = [dict(g) for g in self.gates]
        if self.holds:
            data["holds"] = [dict(h) for h in self.holds]
        if self.migrations:
            data["migrations"] = [dict(m) for m in self.migrations]
        if self.down_migrations:
            data["downMigrations"] = [dict(m) for m in self.down_migrations]
        if self.rollback_of is not None:
            data["rollbackOf"] = self.rollback_of
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryEntry | None:
        started = parse_time(data.get("startedAt"))
        if started is None or not isinstance(data.get("revision"), int):
            return None
        commands = tuple(
            c for c in (CommandRecord.from_dict(raw) for raw in data.get("commands") or []) if c is not None
        )
        return cls(
            revision=int(data["revision"]),
            version=str(data.get("version", "")),
            attempt=int(data.get("attempt", 1)),
            result=str(data.get("result", "")),
            reason=str(data.get("reason", "")),
            started_at=started,
            finished_at=parse_time(data.get("finishedAt")),
            message=str(data.get("message", "")),
            commands=commands,
            gates=tuple(g for g in data.get("gates") or [] if isinstance(g, Mapping)),
            holds=tuple(h for h in data.get("holds") or [] if isinstance(h, Mapping)),
            migrations=tuple(m for m in data.get("migrations") or [] if isinstance(m, Mapping)),
            down_migrations=tuple(m for m in data.get("downMigrations") or [] if isinstance(m, Mapping)),
            rollback_of=_int(data.get("rollbackOf")) or None,
        )


@dataclass(frozen=True)
class Override:
    """A rollback command's revision stands in for the spec while the spec's content stays as it was."""

    revision: int  # the revision the rollback started
    rollback_of: int  # the revision whose recorded content it rolls out
    spec_hash: str  # content hash of the spec it overrides; any other spec content ends the override

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "rollbackOf": self.rollback_of, "specHash": self.spec_hash}

    @classmethod
    def from_dict(cls, data: Any) -> Override | None:
        if not isinstance(data, Mapping) or not _int(data.get("revision")) or not data.get("specHash"):
            return None
        return cls(_int(data.get("revision")), _int(data.get("rollbackOf")), str(data["specHash"]))


@dataclass(frozen=True)
class Rollout:
    """The phase machine's state. Revision 0 means nothing has been rolled out yet."""

    phase: Phase = Phase.PENDING
    reason: str = ""
    message: str = ""
    revision: int = 0
    revision_hash: str = ""
    version: str = ""
    latest_revision: int = 0
    attempt: int = 1
    stable_revision: int = 0
    stable_hash: str = ""
    stable_version: str = ""
    canary_weight: int = 0
    current_step: int = 0
    wave: int = 0  # index of the wave of components in its canary (spec.components[].dependsOn)
    phase_since: datetime | None = None
    step_since: datetime | None = None
    unready_since: datetime | None = None
    history: tuple[HistoryEntry, ...] = field(default=())
    override: Override | None = None

    @property
    def has_stable(self) -> bool:
        return self.stable_revision > 0

    @property
    def is_canary(self) -> bool:
        """A canary needs something to compare against: never for the first revision."""
        return self.has_stable and self.revision != self.stable_revision

    def with_history(self, entry: HistoryEntry, limit: int) -> Rollout:
        return replace(self, history=(*self.history, entry)[-limit:])

    def update_current_entry(self, **changes: Any) -> Rollout:
        """Change the newest history entry if it belongs to the current revision and attempt."""
        if not self.history:
            return self
        last = self.history[-1]
        if (last.revision, last.attempt) != (self.revision, self.attempt):
            return self
        return replace(self, history=(*self.history[:-1], replace(last, **changes)))

    def start(
        self,
        number: int,
        attempt: int,
        version: str,
        content_hash: str,
        now: datetime,
        history_limit: int,
        rollback_of: int | None = None,
    ) -> Rollout:
        """Begin an attempt at a revision: Pending, at step 0 of its first wave, with a history entry."""
        started = replace(
            self,
            phase=Phase.PENDING,
            reason=reasons.NEW_REVISION,
            revision=number,
            revision_hash=content_hash,
            version=version,
            latest_revision=max(self.latest_revision, number),
            attempt=attempt,
            canary_weight=0,
            current_step=0,
            wave=0,
            phase_since=now,
            step_since=now,
            unready_since=None,
        )
        return started.with_history(
            HistoryEntry(number, version, attempt, "InProgress", "", now, rollback_of=rollback_of),
            history_limit,
        )

    def finish(self, result: str, reason: str, now: datetime, message: str = "") -> Rollout:
        """Close the current attempt's history entry, once."""
        if not self.history or self.history[-1].result != "InProgress":
            return self
        return self.update_current_entry(result=result, reason=reason, finished_at=now, message=message)

    def record_command(self, record: CommandRecord) -> Rollout:
        if not self.history:
            return self
        last = self.history[-1]
        return replace(self, history=(*self.history[:-1], replace(last, commands=(*last.commands, record))))

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "phase": self.phase.value,
            "reason": self.reason,
            "message": self.message,
            "revision": self.revision,
            "revisionHash": self.revision_hash,
            "version": self.version,
            "latestRevision": self.latest_revision,
            "attempt": self.attempt,
            "stableRevision": self.stable_revision,
            "stableHash": self.stable_hash,
            "stableVersion": self.stable_version,
            "canaryWeight": self.canary_weight,
            "currentStep": self.current_step,
            "wave": self.wave,
            "history": [h.to_dict() for h in self.history],
            "override": self.override.to_dict() if self.override is not None else None,
        }
        for key, moment in (
            ("phaseSince", self.phase_since),
            ("stepSince", self.step_since),
            ("unreadySince", self.unready_since),
        ):
            status[key] = format_time(moment) if moment is not None else None
        return status

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Rollout:
        status = status or {}
        try:
            phase = Phase(status.get("phase", Phase.PENDING.value))
        except ValueError:
            phase = Phase.PENDING
        history = tuple(
            h for h in (HistoryEntry.from_dict(raw) for raw in status.get("history") or []) if h is not None
        )
        return cls(
            phase=phase,
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or ""),
            revision=_int(status.get("revision")),
            revision_hash=str(status.get("revisionHash") or ""),
            version=str(status.get("version") or ""),
            latest_revision=_int(status.get("latestRevision")),
            attempt=max(1, _int(status.get("attempt"), 1)),
            stable_revision=_int(status.get("stableRevision")),
            stable_hash=str(status.get("stableHash") or ""),
            stable_version=str(status.get("stableVersion") or ""),
            canary_weight=_int(status.get("canaryWeight")),
            current_step=_int(status.get("currentStep")),
            wave=_int(status.get("wave")),
            phase_since=parse_time(status.get("phaseSince")),
            step_since=parse_time(status.get("stepSince")),
            unready_since=parse_time(status.get("unreadySince")),
            history=history,
            override=Override.from_dict(status.get("override")),
        )


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def rollout_conditions(
    rollout: Rollout, spec_error: str | None, reason: str = reasons.INVALID_SPEC
) -> list[Condition]:
    """kstatus: Reconciling/Stalled are abnormal-true (present only when True); Ready always present.

    `spec_error`: what the Release says cannot be rolled out (InvalidSpec, or `reason`): Stalled."""
    if spec_error is not None:
        return [
            Condition("Ready", "False", reason, spec_error),
            Condition("Stalled", "True", reason, spec_error),
        ]
    message = rollout.message
    if rollout.phase is Phase.SUCCEEDED:
        return [Condition("Ready", "True", reasons.SUCCEEDED, message)]
    if rollout.phase in STALLED:
        reason = rollout.reason or rollout.phase.value
        return [Condition("Ready", "False", reason, message), Condition("Stalled", "True", reason, message)]
    reason = rollout.phase.value
    return [Condition("Ready", "Unknown", reason, message), Condition("Reconciling", "True", reason, message)]


def render_conditions(
    wanted: Sequence[Condition], previous: Sequence[Mapping[str, Any]], generation: int, now: datetime
) -> list[dict[str, Any]]:
    """metav1.Condition dicts; lastTransitionTime moves only when a condition's status changes."""
    before = {str(c.get("type")): c for c in previous if isinstance(c, Mapping)}
    rendered = []
    for condition in wanted:
        old = before.get(condition.type)
        unchanged = (
            old is not None and old.get("status") == condition.status and old.get("lastTransitionTime")
        )
        rendered.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "observedGeneration": generation,
                "lastTransitionTime": old["lastTransitionTime"] if unchanged and old else format_seconds(now),
            }
        )
    return rendered
