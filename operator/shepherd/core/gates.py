"""Gates: whether, and when, a revision may move traffic. Pure functions of the spec, what the shell
observed (approvals, other Releases) and the time.

All gates must pass before any traffic moves (phase Gating). Windows are checked
again before every later forward move, so a window that closes mid-canary holds
the canary where it is; a rollback is never held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from shepherd.core import reasons
from shepherd.core.actions import CreateJob, Event
from shepherd.core.analysis import QueryOutcome
from shepherd.core.jobs import job_manifest, job_name, job_outcome
from shepherd.core.promql import render_query, substitute
from shepherd.core.spec import (
    ApprovalGate,
    Gate,
    JobGate,
    MetricGate,
    ReleaseGate,
    WebhookGate,
    WindowGate,
)
from shepherd.core.status import Condition, Phase, Rollout
from shepherd.core.timefmt import format_seconds, format_time, parse_time
from shepherd.core.workloads import GROUP, ReleaseRef

GateState = Literal["Pending", "Passed", "Failed"]
# Who last changed a Release's spec, set by the chart's MutatingAdmissionPolicy from the API server's word.
SPEC_AUTHOR = f"{GROUP}/spec-author"


@dataclass(frozen=True)
class Approval:
    """A ReleaseApproval object, as plain data."""

    name: str
    release: str
    revision: int
    approver: str
    created: datetime | None
    comment: str = ""
    release_uid: str | None = None  # of the Release it is owned by, when it names one
    group: str = ""  # the role it signs for; none: it counts for plain-count gates only


@dataclass(frozen=True)
class WebhookCall:
    """One request the shell makes for a webhook gate; header values come from the Secret, never here."""

    gate: str
    url: str
    method: str
    headers_secret: str | None
    timeout_seconds: float
    body: Mapping[str, Any]  # sent as JSON with POST


@dataclass(frozen=True)
class WebhookAnswer:
    status: int | None  # HTTP status; None when no answer came
    first_line: str = ""  # of the response body
    error: str | None = None  # why there was no answer: refused, timed out, TLS, a missing Secret


@dataclass(frozen=True)
class GateInputs:
    """What the shell observed for the gates of one revision."""

    release: ReleaseRef
    revision: int
    attempt: int
    version: str
    approvals: Sequence[Approval] = ()
    releases: Mapping[tuple[str, str], Mapping[str, Any] | None] = field(default_factory=dict)
    samples: Mapping[str, QueryOutcome] = field(default_factory=dict)  # metric gates' answers
    webhooks: Mapping[str, WebhookAnswer] = field(default_factory=dict)  # by gate
    jobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # owned Jobs, by name
    author: str = ""  # who last changed the spec (SPEC_AUTHOR): their approvals never count


@dataclass(frozen=True)
class RoleResult:
    """One role of an approval gate's `from`: its sign-offs of the revision."""

    group: str
    count: int
    state: GateState
    approvers: tuple[Approval, ...] = ()


@dataclass(frozen=True)
class GateResult:
    name: str
    state: GateState
    message: str
    approvers: tuple[Approval, ...] = ()
    roles: tuple[RoleResult, ...] = ()  # an approval gate's `from`, role by role
    barred: tuple[Approval, ...] = ()  # approvals by the spec's author, which do not count (four eyes)


def window_open(window: WindowGate, now: datetime) -> bool:
    """In the window's time zone, DST included; an end before the start means it crosses midnight."""
    local = now.astimezone(ZoneInfo(window.time_zone))
    moment, day = local.time().replace(tzinfo=None), local.weekday()
    if window.start < window.end:
        return day in window.days and window.start <= moment < window.end
    yesterday = (day - 1) % 7
    return (day in window.days and moment >= window.start) or (
        yesterday in window.days and moment < window.end
    )


def next_window_change(window: WindowGate, now: datetime) -> datetime:
    """The next moment the window opens or closes, so the operator wakes exactly then."""
    zone = ZoneInfo(window.time_zone)
    today = now.astimezone(zone).date()
    candidates = [
        _local(today + timedelta(days=offset), boundary, zone)
        for offset in range(-1, 9)
        for boundary in (window.start, window.end)
    ]
    was_open = window_open(window, now)
    for moment in sorted(c for c in candidates if c > now):
        if window_open(window, moment) != was_open:
            return moment
    return now + timedelta(days=7)


def _local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """A wall-clock time on a day; a time a DST jump skips means the first moment after the jump."""
    naive = datetime.combine(day, clock)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)  # a repeated hour's first occurrence
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    moment = min(first, naive.replace(tzinfo=zone, fold=1).astimezone(UTC))
    while moment.astimezone(zone).replace(tzinfo=None) < naive:
        moment += timedelta(minutes=1)
    return moment


def describe_window(window: WindowGate) -> str:
    days = ",".join(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[d] for d in sorted(window.days))
    return f"{days} {window.start:%H:%M}-{window.end:%H:%M} {window.time_zone}"


def counted_approvals(
    approvals: Iterable[Approval],
    release: str,
    revision: int,
    release_uid: str | None = None,
    group: str | None = None,
    author: str = "",
) -> tuple[Approval, ...]:
    """One approval per approver, for this revision only: older revisions' approvals never count, nor do
    those owned by an earlier Release of the same name (deleted and created again, it counts from 1).
    With `group`, only the sign-offs for that role; without, every approval. Never the author's: whoever
    last changed the spec cannot sign off what they wrote (four eyes)."""
    relevant = [
        a
        for a in _of_revision(approvals, release, revision, release_uid)
        if (group is None or a.group == group) and not (author and a.approver == author)
    ]
    earliest: dict[str, Approval] = {}
    for approval in sorted(relevant, key=_creation_order):
        earliest.setdefault(approval.approver, approval)
    return tuple(earliest.values())


def _of_revision(
    approvals: Iterable[Approval], release: str, revision: int, release_uid: str | None
) -> list[Approval]:
    return [
        a
        for a in approvals
        if a.release == release
        and a.revision == revision
        and a.approver
        and (a.release_uid is None or release_uid is None or a.release_uid == release_uid)
    ]


def _creation_order(approval: Approval) -> tuple[bool, datetime, str]:
    created = approval.created or datetime.max.replace(tzinfo=UTC)
    return approval.created is None, created, approval.name


def evaluate(gate: Gate, inputs: GateInputs, now: datetime) -> GateResult:
    kind = gate.kind
    if isinstance(kind, ApprovalGate):
        return _approval(gate.name, kind, inputs)
    if isinstance(kind, WindowGate):
        if window_open(kind, now):
            return GateResult(gate.name, "Passed", f"inside the window {describe_window(kind)}")
        opens = next_window_change(kind, now)
        return GateResult(
            gate.name,
            "Pending",
            f"outside the window {describe_window(kind)}; opens at {format_seconds(opens)}",
        )
    if isinstance(kind, MetricGate):
        return _metric(gate.name, kind, inputs.samples.get(gate.name))
    if isinstance(kind, WebhookGate):
        url = webhook_url(
            kind, inputs.release.namespace, inputs.release.name, inputs.version, inputs.revision
        )
        return _webhook(gate.name, kind.method, url, inputs.webhooks.get(gate.name))
    if isinstance(kind, JobGate):
        return _job(gate.name, gate_job_name(gate, inputs), inputs)
    return _dependency(gate.name, kind, inputs.release.namespace, inputs.releases)


def _approval(name: str, gate: ApprovalGate, inputs: GateInputs) -> GateResult:
    release, revision, uid, author = inputs.release.name, inputs.revision, inputs.release.uid, inputs.author

    def counted(group: str | None) -> tuple[Approval, ...]:
        return counted_approvals(inputs.approvals, release, revision, uid, group, author)

    groups = {role.group for role in gate.roles}
    barred = [
        a
        for a in _of_revision(inputs.approvals, release, revision, uid)
        if author and a.approver == author and (not groups or a.group in groups)
    ]
    four_eyes = (
        f"; {author}'s approval does not count: {author} last changed the spec (four eyes)" if barred else ""
    )
    if not gate.roles:
        given = counted(None)
        state: GateState = "Passed" if len(given) >= gate.count else "Pending"
        who = ", ".join(a.approver for a in given) or "nobody yet"
        message = f"{len(given)}/{gate.count} approvals of revision {revision}: {who}{four_eyes}"
        return GateResult(name, state, message, given, barred=tuple(barred))
    roles: list[RoleResult] = []
    for role in gate.roles:
        signed = counted(role.group)
        roles.append(
            RoleResult(role.group, role.count, "Passed" if len(signed) >= role.count else "Pending", signed)
        )
    state = "Passed" if all(role.state == "Passed" for role in roles) else "Pending"
    tally = ", ".join(
        f"{role.group} {len(role.approvers)}/{role.count} ({', '.join(a.approver for a in role.approvers)})"
        if role.approvers
        else f"{role.group} 0/{role.count}"
        for role in roles
    )
    signers = tuple(a for role in roles for a in role.approvers)
    message = f"sign-off of revision {revision}: {tally}{four_eyes}"
    return GateResult(name, state, message, signers, tuple(roles), tuple(barred))


def _metric(name: str, gate: MetricGate, sample: QueryOutcome | None) -> GateResult:
    """Only a value within the bounds passes: no data, an error or an unreachable Prometheus never do."""
    if sample is None:
        return GateResult(name, "Pending", "waiting for Prometheus to answer the query")
    if sample.outcome != "value" or sample.value is None:
        problem = sample.message or sample.outcome
        return GateResult(name, "Pending", f"query {sample.query!r} gave no single value: {problem}")
    if gate.max is not None and sample.value > gate.max:
        return GateResult(name, "Pending", f"{sample.value:.6g} is above max {gate.max:g} ({sample.query})")
    if gate.min is not None and sample.value < gate.min:
        return GateResult(name, "Pending", f"{sample.value:.6g} is below min {gate.min:g} ({sample.query})")
    return GateResult(name, "Passed", f"{sample.value:.6g} within limits ({sample.query})")


def _webhook(name: str, method: str, url: str, answer: WebhookAnswer | None) -> GateResult:
    """Only a 2xx passes; an error, a timeout or any other status leaves the gate pending."""
    if answer is None:
        return GateResult(name, "Pending", f"waiting for {method} {url} to answer")
    if answer.status is None:
        return GateResult(name, "Pending", f"{method} {url}: {answer.error or 'no answer'}")
    said = f"HTTP {answer.status}" + (f": {answer.first_line}" if answer.first_line else "")
    return GateResult(name, "Passed" if 200 <= answer.status < 300 else "Pending", said)


def _job(name: str, job: str, inputs: GateInputs) -> GateResult:
    outcome = job_outcome(inputs.jobs.get(job))
    logs = f"kubectl logs job/{job}"
    if outcome.state == "Missing":
        return GateResult(name, "Pending", f"starting job/{job}")
    if outcome.state == "Running":
        return GateResult(name, "Pending", f"job/{job} is running; {logs}")
    if outcome.state == "Succeeded":
        return GateResult(name, "Passed", f"job/{job} succeeded")
    return GateResult(name, "Failed", f"job/{job} failed: {outcome.detail or 'no reason given'}; {logs}")


def gate_job_name(gate: Gate, inputs: GateInputs) -> str:
    return job_name(inputs.release.name, f"gate-{gate.name}", inputs.revision, inputs.attempt)


def gate_jobs(gates: Sequence[Gate], inputs: GateInputs) -> list[CreateJob]:
    """The job gates' Jobs not created yet for this attempt of the revision."""
    creations = []
    for gate in gates:
        name = gate_job_name(gate, inputs)
        if isinstance(gate.kind, JobGate) and name not in inputs.jobs:
            purpose = f"gate-{gate.name}"
            manifest = job_manifest(inputs.release, name, purpose, inputs.revision, gate.kind.template)
            creations.append(CreateJob(manifest))
    return creations


def webhook_calls(
    gates: Sequence[Gate], namespace: str, release: str, version: str, revision: int
) -> tuple[WebhookCall, ...]:
    """Each webhook gate's request with the variables filled in, for the shell to make."""
    body = {"namespace": namespace, "release": release, "version": version, "revision": revision}
    return tuple(
        WebhookCall(
            g.name,
            webhook_url(g.kind, namespace, release, version, revision),
            g.kind.method,
            g.kind.headers_secret,
            g.kind.timeout.total_seconds(),
            {**body, "gate": g.name},
        )
        for g in gates
        if isinstance(g.kind, WebhookGate)
    )


def webhook_url(gate: WebhookGate, namespace: str, release: str, version: str, revision: int) -> str:
    values = {"namespace": namespace, "release": release, "version": version, "revision": str(revision)}
    return substitute(gate.url, values, _url_component)


def _url_component(value: str) -> str:
    return quote(value, safe="")


def metric_gate_queries(
    gates: Sequence[Gate], namespace: str, release: str, version: str, revision: int
) -> tuple[tuple[str, str], ...]:
    """Each metric gate's query with the variables filled in, for the shell to run."""
    values = {
        "namespace": namespace,
        "release": release,
        "component": "",
        "version": version,
        "revision": str(revision),
        "role": "canary",
    }
    return tuple(
        (g.name, render_query(g.kind.query, values)) for g in gates if isinstance(g.kind, MetricGate)
    )


def _dependency(
    name: str, gate: ReleaseGate, namespace: str, releases: Mapping[tuple[str, str], Mapping[str, Any] | None]
) -> GateResult:
    where = (gate.namespace or namespace, gate.name)
    other = releases.get(where)
    label = f"release {where[0]}/{where[1]}"
    if other is None:
        return GateResult(name, "Pending", f"{label} not found")
    status = other.get("status") or {}
    phase, version = status.get("phase"), status.get("version")
    if phase != "Succeeded":
        return GateResult(name, "Pending", f"{label} is {phase or 'not started'}, waiting for Succeeded")
    if gate.version and version != gate.version:
        return GateResult(name, "Pending", f"{label} is at {version}, waiting for {gate.version}")
    return GateResult(name, "Passed", f"{label} is Succeeded at {version}")


def dependencies(gates: Sequence[Gate], namespace: str) -> list[tuple[str, str]]:
    """The other Releases the shell must read for these release gates."""
    return [(g.kind.namespace or namespace, g.kind.name) for g in gates if isinstance(g.kind, ReleaseGate)]


def closed_windows(gates: Sequence[Gate], now: datetime) -> list[Gate]:
    return [g for g in gates if isinstance(g.kind, WindowGate) and not window_open(g.kind, now)]


def gate_status(
    results: Sequence[GateResult], previous: Sequence[Mapping[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """status.gates; lastTransitionTime moves only when a gate's state changes."""
    before = {str(g.get("name")): g for g in previous if isinstance(g, Mapping)}
    rendered = []
    for result in results:
        old = before.get(result.name)
        same = (
            old is not None and old.get("state") == result.state and parse_time(old.get("lastTransitionTime"))
        )
        rendered.append(
            {
                "name": result.name,
                "state": result.state,
                "message": result.message,
                "lastTransitionTime": old["lastTransitionTime"] if same and old else format_seconds(now),
            }
        )
    return rendered


def audit(result: GateResult, now: datetime) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": result.name, "passedAt": format_time(now), "message": result.message}
    if result.approvers:
        entry["approvers"] = [
            {
                "approver": a.approver,
                "at": format_time(a.created) if a.created else None,
                "comment": a.comment,
            }
            | ({"group": a.group} if a.group else {})
            for a in result.approvers
        ]
    return entry


def gates_condition(rollout: Rollout, gates: Sequence[Mapping[str, Any]]) -> Condition:
    if rollout.phase is Phase.FAILED and rollout.reason == reasons.GATE_FAILED:
        return Condition("GatesPassed", "False", reasons.GATE_FAILED, rollout.message)
    waiting = [g for g in gates if g.get("state") != "Passed"]
    if not waiting:
        return Condition("GatesPassed", "True", reasons.GATES_PASSED, "every gate passed")
    message = "; ".join(f"{g.get('name')}: {g.get('message')}" for g in waiting)
    return Condition("GatesPassed", "Unknown", reasons.WAITING, message)


def gate_events(previous: Sequence[Mapping[str, Any]], results: tuple[GateResult, ...]) -> list[Event]:
    before = {str(g.get("name")): g.get("state") for g in previous}
    return [
        Event("Normal", reasons.gate_event(result.state), f"gate {result.name}: {result.message}")
        for result in results
        if before.get(result.name) != result.state
    ]
