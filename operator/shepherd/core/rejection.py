"""Writes the API server refuses for what the Release says (422, 400): reported, never retried in a loop.

The shell applies a decision's actions; when the API server refuses one for its content (a pod template
the CRD schema let through but the Deployment API rejects), the shell stops applying that decision and
records the refusal here: `Stalled=True` with reason InvalidTemplate, the server's message and field, an
Event. Until the Release's generation changes (the content was fixed) or a person gives a command, every
later decision holds everything as it is instead of sending the same refused write again.

A status write the server refuses (a status grown past what the server takes, say) is held the same way,
with reason StatusRefused, by a smaller write of the status as it was: so once, not in a loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shepherd.core import reasons
from shepherd.core.actions import Event
from shepherd.core.status import Rollout, render_conditions, rollout_conditions
from shepherd.core.timefmt import format_time

REASON = reasons.INVALID_TEMPLATE
STATUS_REFUSED = reasons.STATUS_REFUSED


@dataclass(frozen=True)
class Rejection:
    kind: str  # Deployment, ConfigMap, Job, ControllerRevision
    name: str
    code: int  # the HTTP status: 422, 400; 0 when the client's own schema check refused it unsent
    message: str  # the API server's message (or the client's)
    field: str = ""  # the offending field, when the server names one

    def describe(self) -> str:
        where = f" (field {self.field})" if self.field and self.field not in self.message else ""
        who = "the API server" if self.code else "the Kubernetes API schema"
        return f"{who} refused {self.kind} {self.name}{where}: {self.message}"


def record_rejection(
    generation: int, status: Mapping[str, Any], rejection: Rejection, now: datetime, reason: str = REASON
) -> tuple[dict[str, Any], Event]:
    """The status after a refused write: `status` (the decision's own, or for a refused status write the
    one last written) held as Stalled, and its Event."""
    message = (
        f"{rejection.describe()}; nothing running was changed: fix the Release (its next generation is tried)"
    )
    recorded = {
        "reason": reason,
        "generation": generation,
        "kind": rejection.kind,
        "name": rejection.name,
        "code": rejection.code,
        "message": rejection.message,
        "field": rejection.field or None,
        "at": format_time(now),
    }
    return _held(generation, status, message, now, recorded), Event("Warning", reason, message)


def held_status(
    generation: int, status: Mapping[str, Any], now: datetime, new_command: bool
) -> dict[str, Any] | None:
    """The status that holds a refused generation as it is, or None when nothing holds it (no refusal,
    a new generation, or a command a person gave since)."""
    recorded = status.get("rejected")
    if not isinstance(recorded, Mapping) or recorded.get("generation") != generation or new_command:
        return None
    message = str(status.get("message") or "")
    return _held(generation, status, message, now, dict(recorded))


def _held(
    generation: int, status: Mapping[str, Any], message: str, now: datetime, recorded: dict[str, Any]
) -> dict[str, Any]:
    rollout = Rollout.from_status(status)
    conditions = rollout_conditions(rollout, message, reason=str(recorded.get("reason") or REASON))
    return {
        **status,
        "message": message,
        "observedGeneration": generation,
        "conditions": render_conditions(conditions, status.get("conditions") or [], generation, now),
        "rejected": {k: v for k, v in recorded.items() if v is not None},
    }
