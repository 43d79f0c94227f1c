"""A release's plan: when it may start, what it contains, who answers for it, how risky it is.

`spec.plan.notBefore` holds a new revision in Gating until its time (as a gate named `plan/notBefore`),
while its gates and sign-offs may complete earlier; a revision started by a rollback never waits for it.
The rest of the plan is what people are told: it goes with the revision's record (its ControllerRevision),
into notifications and into `kubectl release notes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import durationpy

from shepherd.core.errors import SpecError
from shepherd.core.timefmt import format_seconds, parse_time

SCHEDULE_GATE = "plan/notBefore"
# What the people a revision concerns are told of its plan, each once per revision (status.announced).
PLANNED = "Planned"  # a revision with a plan is first seen
REMINDER = "Reminder"  # spec.plan.remindBefore ahead of notBefore, naming what is still open
STARTED = "Started"  # the revision's rollout began: its gates, and its time, have passed
ANNOUNCEMENTS = (PLANNED, REMINDER, STARTED)
RISKS = ("low", "medium", "high")
MAX_SUMMARY = 200
MAX_NOTES = 20000
MAX_CHANGES = 100


@dataclass(frozen=True)
class Change:
    """One item of what a release contains: a ticket, a pull request, a commit."""

    title: str
    url: str | None = None
    id: str | None = None

    def to_dict(self) -> dict[str, str]:
        item = {"title": self.title, "url": self.url, "id": self.id}
        return {k: v for k, v in item.items() if v}


@dataclass(frozen=True)
class Plan:
    not_before: datetime | None = None
    summary: str = ""
    notes: str = ""
    changes: tuple[Change, ...] = ()
    owner: str = ""
    risk: str = ""
    remind_before: timedelta | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plan as the API writes it (empty fields left out)."""
        plan: dict[str, Any] = {
            "notBefore": format_seconds(self.not_before) if self.not_before else None,
            "summary": self.summary,
            "notes": self.notes,
            "changes": [change.to_dict() for change in self.changes],
            "owner": self.owner,
            "risk": self.risk,
            "remindBefore": str(durationpy.to_str(self.remind_before)) if self.remind_before else None,
        }
        return {k: v for k, v in plan.items() if v}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """A recorded plan, as `to_dict` wrote it: trusted, so read leniently."""
        changes = data.get("changes") or []
        return cls(
            not_before=parse_time(data.get("notBefore")),
            summary=str(data.get("summary") or ""),
            notes=str(data.get("notes") or ""),
            changes=tuple(
                Change(str(c.get("title") or ""), c.get("url") or None, c.get("id") or None)
                for c in changes
                if isinstance(c, Mapping)
            ),
            owner=str(data.get("owner") or ""),
            risk=str(data.get("risk") or ""),
            remind_before=_duration(data.get("remindBefore"), "remindBefore", lenient=True),
        )


def parse_plan(raw: Any, field: str = "spec.plan") -> Plan | None:
    """Validate `spec.plan`; raise SpecError naming the first bad field. None when there is no plan."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SpecError(field, "must be an object")
    not_before = None
    if raw.get("notBefore") is not None:
        value = raw["notBefore"]
        not_before = parse_time(value) if isinstance(value, str) and _has_zone(value) else None
        if not_before is None:
            raise SpecError(
                f"{field}.notBefore",
                f"{value!r} is not an RFC 3339 time with a time zone, such as 2026-12-10T09:00:00Z",
            )
    summary = _text(raw.get("summary"), f"{field}.summary", MAX_SUMMARY)
    if "\n" in summary:
        raise SpecError(f"{field}.summary", "must be one line: put the details in notes")
    risk = _text(raw.get("risk"), f"{field}.risk", 10)
    if risk and risk not in RISKS:
        raise SpecError(f"{field}.risk", f"{risk!r} is not one of {', '.join(RISKS)}")
    changes = raw.get("changes") or []
    if not isinstance(changes, list):
        raise SpecError(f"{field}.changes", "must be a list of {title, url, id}")
    if len(changes) > MAX_CHANGES:
        raise SpecError(f"{field}.changes", f"must have at most {MAX_CHANGES} items")
    return Plan(
        not_before=not_before,
        summary=summary,
        notes=_text(raw.get("notes"), f"{field}.notes", MAX_NOTES),
        changes=tuple(_change(item, f"{field}.changes[{index}]") for index, item in enumerate(changes)),
        owner=_text(raw.get("owner"), f"{field}.owner", 100),
        risk=risk,
        remind_before=_duration(raw.get("remindBefore"), f"{field}.remindBefore"),
    )


def schedule(plan: Plan | None, rollback_of: int | None, now: datetime) -> tuple[bool, str] | None:
    """The plan's start time as a gate of the revision: (passed, message); None when it has none, or the
    revision is a rollback, which never waits for a plan."""
    if plan is None or plan.not_before is None or rollback_of is not None:
        return None
    when = format_seconds(plan.not_before)
    if now >= plan.not_before:
        return True, f"scheduled for {when}: due"
    return False, f"scheduled for {when} (in {format_wait(plan.not_before - now)})"


def reminder_at(plan: Plan | None) -> datetime | None:
    if plan is None or plan.not_before is None or plan.remind_before is None:
        return None
    return plan.not_before - plan.remind_before


def announce(
    plan: Plan | None, revision: int, gating: bool, started: bool, before: Any, now: datetime
) -> dict[str, Any] | None:
    """status.announced after this decision: what the people concerned have been told of this revision's
    plan. Written with the status before anything is sent, so each is sent once, whatever restarts."""
    if plan is None or not revision:
        return None
    sent: list[str] = []
    if isinstance(before, Mapping) and before.get("revision") == revision:
        sent = [str(item) for item in before.get("sent") or [] if item in ANNOUNCEMENTS]
    due = [PLANNED]
    remind = reminder_at(plan)
    if gating and remind is not None and plan.not_before is not None and remind <= now < plan.not_before:
        due.append(REMINDER)
    if started:
        due.append(STARTED)
    sent.extend(item for item in due if item not in sent)
    return {"revision": revision, "sent": sent}


def format_wait(length: timedelta) -> str:
    """`2h 10m`, `3d 4h`, `45s`: to the minute once it is a minute or more (rounded up)."""
    seconds = max(0, int(length.total_seconds() + 0.999))
    if seconds < 60:
        return f"{seconds}s"
    minutes = (seconds + 59) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return " ".join(part for part in parts if part)


def _duration(value: Any, field: str, lenient: bool = False) -> timedelta | None:
    if value is None:
        return None
    try:
        parsed = durationpy.from_str(value) if isinstance(value, str) else None
    except (durationpy.DurationError, ValueError):
        parsed = None
    if parsed is None or parsed <= timedelta(0):
        if lenient:
            return None
        raise SpecError(field, f"{value!r} is not a duration longer than 0s, such as 1h or 30m")
    return parsed


def _has_zone(value: str) -> bool:
    tail = value[10:]
    return value.endswith(("Z", "z")) or "+" in tail or "-" in tail


def _text(value: Any, field: str, most: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SpecError(field, f"must be a string, not {value!r}")
    if len(value) > most:
        raise SpecError(field, f"must be at most {most} characters")
    return value


def _change(raw: Any, field: str) -> Change:
    if not isinstance(raw, Mapping):
        raise SpecError(field, "must be an object with title, and optionally url and id")
    title = _text(raw.get("title"), f"{field}.title", MAX_SUMMARY)
    if not title:
        raise SpecError(f"{field}.title", "is required")
    url = _text(raw.get("url"), f"{field}.url", 2048)
    if url and not url.startswith(("https://", "http://")):
        raise SpecError(f"{field}.url", f"{url!r} must be an http(s) URL")
    return Change(title, url or None, _text(raw.get("id"), f"{field}.id", 100) or None)
