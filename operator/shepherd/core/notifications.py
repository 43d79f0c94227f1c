"""Which notifications a status write sends, and what they say: pure.

A notification reports a transition, and a transition is what one status write
records: the status before and the status after differ in a way listed below.
The shell sends only once that write succeeded, so a reconcile that changes
nothing sends nothing, and a write that fails sends nothing until the one that
records the transition. When the machine passes through several phases in one
reconcile (Gating with every gate already passed, say), the phase reached is
the one notified.

What a notification can be sent on (its `events`):
- a phase name: the Release entered that phase, or stays in it for a new reason
  (a canary Paused by a freeze after a closed window);
- NewRevision: an attempt at a revision started (new content, or a retry);
- AnalysisFailed: the attempt failed its analysis or bake (reason AnalysisFailed,
  AnalysisInconclusive, AnalysisError or BakeFailed), once, as it rolls back or fails;
- GateFailed: a gate failed, or did not pass within its timeout (phase Failed, reason GateFailed);
- InvalidSpec: the spec became invalid, or invalid in another way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shepherd.core import reasons
from shepherd.core.model import ReleaseObject
from shepherd.core.policy import Policy
from shepherd.core.spec import NotificationSpec, SpecError, parse_notifications
from shepherd.core.timefmt import format_time

FAILURES = frozenset({"RollingBack", "RolledBack", "Failed"})
SLACK_TEXT_LIMIT = 2000  # Slack cuts a section's text at 3000 characters


@dataclass(frozen=True)
class Message:
    target: NotificationSpec
    events: tuple[str, ...]  # what the transition is, among NOTIFICATION_EVENTS
    summary: str  # for logs and Events, e.g. "RolledBack, AnalysisFailed of revision 2 (1.1.0)"
    body: Mapping[str, Any]  # the JSON document to POST


def select(
    release: ReleaseObject, new: Mapping[str, Any], policies: Sequence[Policy], now: datetime
) -> tuple[Message, ...]:
    """The messages a status write from `release.status` to `new` sends: one per interested target."""
    events = transition_events(release.status, new)
    if not events:
        return ()
    fields = message_fields(release, new, events, now)
    summary = f"{', '.join(events)} of revision {fields['revision']} ({fields['version']})"
    return tuple(
        Message(target, events, summary, render(target.format, fields))
        for target in targets(release, policies)
        if target.events.intersection(events)
    )


def targets(release: ReleaseObject, policies: Sequence[Policy]) -> tuple[NotificationSpec, ...]:
    """The Release's own notifications, then its policies'; one message per Secret key at most."""
    try:
        own = parse_notifications(release.spec.get("notifications"))
    except SpecError:
        own = ()  # the decision reports the spec as invalid; the policies' notifications still go out
    chosen: dict[tuple[str, str, str], NotificationSpec] = {}
    for target in (*own, *(n for policy in policies for n in policy.notifications)):
        ref = target.url
        chosen.setdefault((ref.namespace or release.namespace, ref.name, ref.key), target)
    return tuple(chosen.values())


def transition_events(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    events: list[str] = []
    phase, reason = str(new.get("phase") or ""), str(new.get("reason") or "")
    if _int(new.get("revision")) > 0:
        if _transition(old) != _transition(new):
            events.append(phase)
        already_failing = _attempt(old) == _attempt(new) and old.get("phase") in FAILURES
        if phase in FAILURES and not already_failing:
            if reason in reasons.ANALYSIS_REASONS:
                events.append(reasons.ANALYSIS_FAILED)
            if phase == "Failed" and reason == reasons.GATE_FAILED:
                events.append(reasons.GATE_FAILED)
        started = {_attempt(h) for h in old.get("history") or []}
        if any(_attempt(h) not in started for h in new.get("history") or []):
            events.append(reasons.NEW_REVISION)
    problem = invalid_spec(new)
    if problem is not None and problem != invalid_spec(old):
        events.append(reasons.INVALID_SPEC)
    return tuple(events)


def invalid_spec(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Stalled" and condition.get("reason") == reasons.INVALID_SPEC:
            return str(condition.get("message") or "")
    return None


def message_fields(
    release: ReleaseObject, new: Mapping[str, Any], events: Sequence[str], now: datetime
) -> dict[str, Any]:
    """What every format says: which Release, which revision, where it is and why."""
    phase = str(new.get("phase") or "")
    invalid_only = reasons.INVALID_SPEC in events and phase not in events
    return {
        "release": release.name,
        "namespace": release.namespace,
        "revision": _int(new.get("revision")),
        "attempt": _int(new.get("attempt"), 1),
        "version": str(new.get("version") or ""),
        "phase": phase,
        "previousPhase": release.status.get("phase"),
        "reason": reasons.INVALID_SPEC if invalid_only else str(new.get("reason") or ""),
        "message": (invalid_spec(new) if invalid_only else None) or str(new.get("message") or ""),
        "stableRevision": _int(new.get("stableRevision")),
        "stableVersion": str(new.get("stableVersion") or ""),
        "events": list(events),
        "at": format_time(now),
    }


def render(format: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    return slack_message(fields) if format == "slack" else dict(fields)


def slack_message(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` for the notification, blocks for the channel."""
    events = fields["events"]
    if FAILURES.intersection(events) or reasons.INVALID_SPEC in events:
        icon = ":rotating_light:"
    elif "Succeeded" in events:
        icon = ":white_check_mark:"
    elif "Paused" in events:
        icon = ":double_vertical_bar:"
    else:
        icon = ":arrow_forward:"
    reason = fields["reason"]
    headline = (
        f"{icon} *{_slack(fields['namespace'])}/{_slack(fields['release'])}* "
        f"{_slack(fields['version'])} (revision {fields['revision']}): *{_slack(fields['phase'])}*"
        + (f" ({_slack(reason)})" if reason and reason != fields["phase"] else "")
    )
    message = fields["message"]
    if len(message) > SLACK_TEXT_LIMIT:
        message = message[: SLACK_TEXT_LIMIT - 1] + "…"
    text = f"{headline}\n{_slack(message)}" if message else headline
    stable = (
        f"stable {_slack(fields['stableVersion'])} (revision {fields['stableRevision']})"
        if fields["stableRevision"]
        else "no stable revision yet"
    )
    context = f"{stable} · attempt {fields['attempt']} · {', '.join(events)} · {fields['at']}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def _slack(value: str) -> str:
    """Slack reads &, < and > as markup: escape them as its formatting guide says."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _transition(status: Mapping[str, Any]) -> tuple[int, int, str, str]:
    return (*_attempt(status), str(status.get("phase") or ""), str(status.get("reason") or ""))


def _attempt(entry: Mapping[str, Any]) -> tuple[int, int]:
    return _int(entry.get("revision")), _int(entry.get("attempt"), 1)


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
