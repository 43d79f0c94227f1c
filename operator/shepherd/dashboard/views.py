"""What the pages show, computed from the Releases as the API server returned them: pure, so the board's
"needs attention" rules are tested without a server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shepherd.core.timefmt import parse_time

RECENT = timedelta(hours=24)
SOON = timedelta(hours=24)
PROBLEM_PHASES = frozenset({"Failed", "RolledBack"})


@dataclass(frozen=True)
class Row:
    namespace: str
    name: str
    stable: str
    version: str
    phase: str
    step: int  # steps done (the current one counts once it is reached)
    steps: int
    weight: int
    traffic: str
    age: str
    message: str
    attention: tuple[str, ...] = field(default=())

    @property
    def progress(self) -> int:
        if not self.steps:
            return 100 if self.phase == "Succeeded" else 0
        return round(100 * self.step / self.steps)


def _age(created: object, now: datetime) -> str:
    at = parse_time(created)
    if at is None:
        return ""
    seconds = max(0, int((now - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def steps_of(release: Mapping[str, Any]) -> list[Any]:
    spec = release.get("spec") or {}
    return list(((spec.get("strategy") or {}).get("canary") or {}).get("steps") or [])


def traffic_line(state: Mapping[str, Any]) -> str:
    """The weight the step asked for, and what the routes or replicas really give the canary."""
    weight = int(state.get("canaryWeight") or 0)
    traffic = state.get("traffic")
    if isinstance(traffic, Mapping) and traffic.get("routing") == "Replicas":
        shares = [f"{c.get('name')} {c.get('canaryShare', 0)}%" for c in traffic.get("components") or []]
        return f"{weight}% (pods: {', '.join(shares)})" if shares else f"{weight}%"
    if isinstance(traffic, Mapping) and traffic.get("routing") == "GatewayAPI":
        held = [str(r.get("weight")) for r in traffic.get("routes") or [] if r.get("weight") is not None]
        return f"{weight}% (routes: {', '.join(held)}%)" if held else f"{weight}%"
    return f"{weight}%"


def condition(state: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in state.get("conditions") or [] if c.get("type") == kind), None)


def attention(release: Mapping[str, Any], now: datetime) -> tuple[str, ...]:
    """Why a person should look at this Release now (none: it needs no one)."""
    spec, state = release.get("spec") or {}, release.get("status") or {}
    phase = str(state.get("phase") or "")
    reasons = []
    waiting = [
        str(item.get("group") or item.get("owner") or "anyone")
        for item in state.get("checklist") or []
        if item.get("kind") == "approval" and item.get("state") == "Pending"
    ]
    if waiting and phase in ("Gating", "Pending", ""):
        reasons.append(f"waiting for sign-off by {', '.join(sorted(set(waiting)))}")
    if spec.get("paused") or (phase == "Paused" and not state.get("pausedUntil")):
        reasons.append("paused with no end")
    finished = [parse_time(h.get("finishedAt")) for h in state.get("history") or [] if h.get("result")]
    recent = [h for h in state.get("history") or [] if h.get("result") in PROBLEM_PHASES]
    if phase in PROBLEM_PHASES and (
        not finished or any((at := parse_time(h.get("finishedAt"))) and now - at <= RECENT for h in recent)
    ):
        reasons.append(f"{phase.lower().replace('rolledback', 'rolled back')} in the last 24 h")
    stalled = condition(state, "Stalled")
    if stalled and stalled.get("status") == "True":
        reasons.append(f"stalled: {stalled.get('message') or stalled.get('reason') or ''}".rstrip(": "))
    if state.get("rejected"):
        reasons.append("invalid spec")
    planned = parse_time((spec.get("plan") or {}).get("notBefore"))
    if planned is not None and now <= planned <= now + SOON:
        reasons.append(f"planned for {planned:%Y-%m-%d %H:%M} UTC")
    return tuple(reasons)


def row(release: Mapping[str, Any], now: datetime) -> Row:
    meta, spec, state = release.get("metadata") or {}, release.get("spec") or {}, release.get("status") or {}
    steps = steps_of(release)
    phase = str(state.get("phase") or "Pending")
    current = state.get("currentStep")
    done = len(steps) if phase == "Succeeded" else (int(current) if isinstance(current, int) else 0)
    return Row(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        stable=str(state.get("stableVersion") or ""),
        version=str(spec.get("version") or ""),
        phase=phase,
        step=min(done, len(steps)),
        steps=len(steps),
        weight=int(state.get("canaryWeight") or 0),
        traffic=traffic_line(state),
        age=_age(meta.get("creationTimestamp"), now),
        message=str(state.get("message") or ""),
        attention=attention(release, now),
    )


@dataclass(frozen=True)
class Filters:
    namespace: str = ""
    phase: str = ""
    text: str = ""

    def admits(self, shown: Row) -> bool:
        return (
            (not self.namespace or shown.namespace == self.namespace)
            and (not self.phase or shown.phase == self.phase)
            and self.text.lower() in f"{shown.namespace}/{shown.name} {shown.version}".lower()
        )


@dataclass(frozen=True)
class Board:
    rows: list[Row]
    attention: list[Row]
    namespaces: list[str]
    phases: list[str]
    total: int


def board(releases: Iterable[Mapping[str, Any]], filters: Filters, now: datetime) -> Board:
    every = sorted((row(r, now) for r in releases), key=lambda r: (r.namespace, r.name))
    shown = [r for r in every if filters.admits(r)]
    return Board(
        rows=shown,
        attention=[r for r in shown if r.attention],
        namespaces=sorted({r.namespace for r in every}),
        phases=sorted({r.phase for r in every}),
        total=len(every),
    )


def components(release: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each component with its images (the canary's, from the spec) and replicas."""
    shown = []
    traffic = (release.get("status") or {}).get("traffic") or {}
    pods = {c.get("name"): c for c in traffic.get("components") or []} if isinstance(traffic, Mapping) else {}
    for component in (release.get("spec") or {}).get("components") or []:
        containers = ((component.get("template") or {}).get("spec") or {}).get("containers") or []
        counted = pods.get(component.get("name")) or {}
        shown.append(
            {
                "name": component.get("name", ""),
                "images": [str(c.get("image", "")) for c in containers],
                "replicas": component.get("replicas", ""),
                "canary_pods": counted.get("canaryPods"),
                "stable_pods": counted.get("stablePods"),
            }
        )
    return shown


def step_label(step: Mapping[str, Any]) -> str:
    if "setWeight" in step:
        return f"set weight {step['setWeight']}%"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return f"pause {duration}" if duration else "pause until promoted"
    if "analysis" in step:
        return "analysis"
    key = next(iter(step), "step")
    return key


def timeline(release: Mapping[str, Any]) -> list[dict[str, Any]]:
    state = release.get("status") or {}
    phase = str(state.get("phase") or "")
    current = state.get("currentStep")
    steps = steps_of(release)
    marked = current if isinstance(current, int) and phase in ("Progressing", "Paused") else None
    return [
        {
            "number": index + 1,
            "label": step_label(step) if isinstance(step, Mapping) else str(step),
            "state": "done"
            if phase == "Succeeded" or (isinstance(current, int) and index < current)
            else ("current" if index == marked else "next"),
        }
        for index, step in enumerate(steps)
    ]


def revision_started(state: Mapping[str, Any]) -> datetime | None:
    """When the current revision's latest attempt started (its history entry), if recorded."""
    entries = [h for h in state.get("history") or [] if h.get("revision") == state.get("revision")]
    return parse_time(entries[-1].get("startedAt")) if entries else None


def analysis(release: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per metric: its query and bounds from the spec, and the measurements of the current revision's
    attempt (those before it started measured the revision before)."""
    spec, state = release.get("spec") or {}, release.get("status") or {}
    metrics = {m.get("name"): m for m in (spec.get("analysis") or {}).get("metrics") or []}
    since = revision_started(state)
    measured: dict[str, list[Mapping[str, Any]]] = {}
    for measurement in state.get("analysis") or []:
        at = parse_time(measurement.get("at"))
        if since is None or at is None or at >= since:
            measured.setdefault(str(measurement.get("metric", "")), []).append(measurement)
    names = list(metrics) + [n for n in measured if n not in metrics]
    shown = []
    for name in names:
        own = measured.get(str(name), [])
        errors = [m for m in own if m.get("result") == "Error"]
        shown.append(
            {
                "name": name,
                "query": (metrics.get(name) or {}).get("query", ""),
                "min": (metrics.get(name) or {}).get("min"),
                "max": (metrics.get(name) or {}).get("max"),
                "measurements": own,
                "chart": chart_data(own, metrics.get(name) or {}),
                "error": str(errors[-1].get("message") or "") if errors else "",
            }
        )
    return shown


def approval_roles(checklist: Sequence[Mapping[str, Any]]) -> list[str]:
    """The roles a sign-off may be given for: "" (no role) when a gate takes anyone's approval."""
    roles = sorted({str(i.get("group") or "") for i in checklist if i.get("kind") == "approval"})
    return roles or [""]


def chart_data(measurements: Sequence[Mapping[str, Any]], metric: Mapping[str, Any]) -> dict[str, Any]:
    """One metric's measurements as the chart draws them: times (Unix seconds), and per role a series with
    a value where that role was measured (canary; stable, which after promotion is the new version baking;
    the baseline it was compared with), and the bounds the values are held to."""
    kept = [
        (at, m)
        for m in measurements
        if (at := parse_time(m.get("at"))) is not None and isinstance(m.get("value"), int | float)
    ]
    series: dict[str, list[float | None]] = {}
    for index, (_, m) in enumerate(kept):
        role = str(m.get("role") or "canary")
        series.setdefault(role, [None] * len(kept))[index] = m["value"]
        if isinstance(m.get("baseline"), int | float):
            series.setdefault("baseline", [None] * len(kept))[index] = m["baseline"]
    return {
        "at": [at.timestamp() for at, _ in kept],
        "series": series,
        "min": metric.get("min"),
        "max": metric.get("max"),
    }
