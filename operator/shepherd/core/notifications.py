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
- InvalidSpec: the spec became invalid, or invalid in another way;
- Planned, Reminder, Started: what status.announced records of a planned revision (see core/plan.py), each
  once per revision: first seen, spec.plan.remindBefore ahead of its time (naming what is still open), and
  its rollout begun.

Every message carries the revision's plan (summary, notes, changes, owner, risk, time) when it has one, and
the readiness items still open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shepherd.core import reasons
from shepherd.core.model import ReleaseObject
from shepherd.core.plan import REMINDER, SCHEDULE_GATE, format_wait, parse_plan
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
    told = _announced(old) if _announced(old)[0] == _announced(new)[0] else (0, ())
    events.extend(item for item in _announced(new)[1] if item not in told[1])
    return tuple(events)


def _announced(status: Mapping[str, Any]) -> tuple[int, tuple[str, ...]]:
    announced = status.get("announced")
    if not isinstance(announced, Mapping):
        return 0, ()
    return _int(announced.get("revision")), tuple(str(e) for e in announced.get("sent") or [])


def open_items(status: Mapping[str, Any]) -> list[str]:
    """What the revision still waits for, and whose it is: `qa sign-off (team-qa)`."""
    items = []
    for gate in status.get("gates") or []:
        if isinstance(gate, Mapping) and gate.get("state") != "Passed" and gate.get("name") != SCHEDULE_GATE:
            owner = _owners(status).get(str(gate.get("name")))
            items.append(f"{gate.get('name')} ({owner})" if owner else str(gate.get("name")))
    return items


def _owners(status: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(item.get("name")): str(item.get("owner"))
        for item in status.get("checklist") or []
        if isinstance(item, Mapping) and item.get("owner")
    }


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
        **plan_fields(release, new, events, now),
    }


def plan_fields(
    release: ReleaseObject, new: Mapping[str, Any], events: Sequence[str], now: datetime
) -> dict[str, Any]:
    """The revision's plan and its open items; for a Reminder, the line that says what is still open."""
    try:
        plan = parse_plan(release.spec.get("plan"))
    except SpecError:
        plan = None
    if plan is None or _announced(new)[0] != _int(new.get("revision")):
        return {}
    items = open_items(new)
    fields: dict[str, Any] = {"plan": plan.to_dict(), "openItems": items}
    if REMINDER in events and plan.not_before is not None:
        waiting = f"waiting for {', '.join(items)}" if items else "nothing is left open"
        fields["reminder"] = f"in {format_wait(plan.not_before - now)}: {waiting}"
    return fields


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
    reminder = fields.get("reminder")
    message = f"{reminder}\n{message}" if reminder else message
    text = f"{headline}\n{_slack(message)}" if message else headline
    stable = (
        f"stable {_slack(fields['stableVersion'])} (revision {fields['stableRevision']})"
        if fields["stableRevision"]
        else "no stable revision yet"
    )
    context = f"{stable} · attempt {fields['attempt']} · {', '.join(events)} · {fields['at']}"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    blocks.extend(_plan_blocks(fields.get("plan") or {}))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": text, "blocks": blocks}


def _plan_blocks(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The plan, legibly: summary and facts, the changes as a list of links, the notes as they are."""
    if not plan:
        return []
    facts = [
        f"*{label}:* {_slack(str(plan[key]))}"
        for label, key in (("Owner", "owner"), ("Risk", "risk"), ("Not before", "notBefore"))
        if plan.get(key)
    ]
    lines = [f"*{_slack(plan['summary'])}*"] if plan.get("summary") else []
    if facts:
        lines.append(" · ".join(facts))
    blocks: list[dict[str, Any]] = []
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    changes = [_slack_change(change) for change in plan.get("changes") or []]
    if changes:
        listed = "\n".join(f"• {line}" for line in changes)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(listed)}})
    if plan.get("notes"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(_slack(plan["notes"]))}})
    return blocks


def _slack_change(change: Mapping[str, Any]) -> str:
    title = _slack(str(change.get("title") or ""))
    label = f"{_slack(str(change['id']))}: {title}" if change.get("id") else title
    return f"<{change['url']}|{label}>" if change.get("url") else label


def _cut(text: str) -> str:
    return text if len(text) <= SLACK_TEXT_LIMIT else text[: SLACK_TEXT_LIMIT - 1] + "…"


def _slack(value: str) -> str:
    """Slack reads &, < and > as markup: escape them as its formatting guide says."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _transition(status: Mapping[str, Any]) -> tuple[int, int, str, str]:
    return (*_attempt(status), str(status.get("phase") or ""), str(status.get("reason") or ""))


def _attempt(entry: Mapping[str, Any]) -> tuple[int, int]:
    return _int(entry.get("revision")), _int(entry.get("attempt"), 1)


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
