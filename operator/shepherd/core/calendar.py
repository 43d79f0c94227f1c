"""The release calendar: planned revisions, and the freezes and windows that hold releases, in time order.

Pure: `kubectl release calendar` reads the Releases, the ReleasePolicies and the namespaces' labels, and
this module lays out what happens between `now` and `now + days`. Windows recur: each opening in the range
is an entry of its own, in the window's time zone (DST included).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shepherd.core.gates import next_window_change, window_open
from shepherd.core.plan import parse_plan
from shepherd.core.policy import applicable
from shepherd.core.spec import Gate, SpecError, WindowGate, parse_gates
from shepherd.core.timefmt import format_seconds


@dataclass(frozen=True)
class Entry:
    start: datetime | None  # None: since before the range (a freeze under way)
    end: datetime | None  # None: open-ended, or a moment (a planned revision)
    namespace: str
    kind: str  # "planned", "freeze" or "window"
    name: str  # the Release, policy or gate it comes from
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": format_seconds(self.start) if self.start else None,
            "end": format_seconds(self.end) if self.end else None,
            "namespace": self.namespace,
            "kind": self.kind,
            "name": self.name,
            "detail": self.detail,
        }


def calendar(
    releases: Iterable[Mapping[str, Any]],
    policies: Iterable[Mapping[str, Any]],
    namespace_labels: Mapping[str, Mapping[str, str]],
    now: datetime,
    days: int,
) -> list[Entry]:
    """What lies in [now, now + days]: per namespace of `namespace_labels`, in time order."""
    until = now + timedelta(days=days)
    entries: list[Entry] = []
    by_namespace: dict[str, list[Mapping[str, Any]]] = {}
    for release in releases:
        by_namespace.setdefault(str(release["metadata"].get("namespace") or ""), []).append(release)
    policies = list(policies)
    for namespace, labels in namespace_labels.items():
        matched = applicable(policies, labels)
        for policy in matched:
            for freeze in policy.freezes:
                if (freeze.end is None or freeze.end > now) and (
                    freeze.start is None or freeze.start < until
                ):
                    entries.append(
                        Entry(freeze.start, freeze.end, namespace, "freeze", policy.name, freeze.reason)
                    )
        windows = [(g.name, g.kind) for p in matched for g in p.gates if isinstance(g.kind, WindowGate)]
        for release in by_namespace.get(namespace, []):
            name = str(release["metadata"].get("name") or "")
            spec = release.get("spec") or {}
            entries.extend(_planned(namespace, name, spec, now, until))
            windows.extend(
                (f"{name}/{g.name}", g.kind) for g in _gates(spec) if isinstance(g.kind, WindowGate)
            )
        for name, window in windows:
            entries.extend(
                Entry(start, end, namespace, "window", name, _describe(window))
                for start, end in openings(window, now, until)
            )
    return sorted(
        entries, key=lambda e: (e.start or now - timedelta(days=36500), e.namespace, e.kind, e.name)
    )


def openings(window: WindowGate, now: datetime, until: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Each time the window is open within [now, until): (opens, closes); one open now starts at `now`."""
    opened = now if window_open(window, now) else None
    moment = now
    while True:
        moment = next_window_change(window, moment)
        if opened is not None:
            yield opened, moment
            opened = None
        elif moment >= until:
            return
        else:
            opened = moment


def _planned(
    namespace: str, name: str, spec: Mapping[str, Any], now: datetime, until: datetime
) -> list[Entry]:
    try:
        plan = parse_plan(spec.get("plan"))
    except SpecError:
        return []
    if plan is None or plan.not_before is None or not now <= plan.not_before < until:
        return []
    facts = [f"version {spec.get('version')}", plan.summary, plan.owner and f"owner {plan.owner}"]
    facts.append(plan.risk and f"risk {plan.risk}")
    return [Entry(plan.not_before, None, namespace, "planned", name, "; ".join(f for f in facts if f))]


def _gates(spec: Mapping[str, Any]) -> tuple[Gate, ...]:
    try:
        return parse_gates(spec.get("gates"))
    except SpecError:
        return ()


def _describe(window: WindowGate) -> str:
    days = ", ".join(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[d] for d in sorted(window.days))
    return f"{days} {window.start:%H:%M}-{window.end:%H:%M} {window.time_zone}"
