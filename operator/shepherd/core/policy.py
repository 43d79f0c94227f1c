"""ReleasePolicies: org-wide rules for every Release in the namespaces they select.

A policy adds its windows, gates and notifications to each matched Release's own
and declares freezes. A freeze blocks every forward move (start, weight increase, promotion)
but never a rollback. A matched policy the operator cannot read fails closed:
it holds Releases like a freeze, so a broken freeze never lets a release through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shepherd.core.spec import (
    Gate,
    NotificationSpec,
    SpecError,
    parse_gates,
    parse_notifications,
    parse_window,
)
from shepherd.core.timefmt import format_seconds, parse_time


@dataclass(frozen=True)
class Freeze:
    policy: str
    reason: str
    start: datetime | None  # None: held until the policy is fixed
    end: datetime | None

    def active(self, now: datetime) -> bool:
        if self.start is None or self.end is None:
            return True
        return self.start <= now < self.end

    def describe(self) -> str:
        until = f" until {format_seconds(self.end)}" if self.end else ""
        return f"freeze of policy {self.policy}: {self.reason}{until}"


@dataclass(frozen=True)
class Policy:
    name: str
    freezes: tuple[Freeze, ...] = ()
    gates: tuple[Gate, ...] = ()  # its windows and gates, named "<policy>/<name>"
    notifications: tuple[NotificationSpec, ...] = ()


def applicable(policies: Iterable[Mapping[str, Any]], namespace_labels: Mapping[str, str]) -> list[Policy]:
    """The policies whose namespaceSelector matches, parsed; an unreadable one becomes a hold."""
    matched = []
    for raw in policies:
        name = str((raw.get("metadata") or {}).get("name", ""))
        spec = raw.get("spec") or {}
        if not isinstance(spec, Mapping):
            matched.append(_broken(name, "spec must be an object"))
            continue
        try:
            if selects(spec.get("namespaceSelector") or {}, namespace_labels):
                matched.append(parse_policy(name, spec))
        except SpecError as error:
            matched.append(_broken(name, str(error)))
    return matched


def _broken(name: str, problem: str) -> Policy:
    return Policy(name, (Freeze(name, f"the policy is invalid ({problem}); fix it to release", None, None),))


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; an empty selector selects every namespace."""
    if not isinstance(selector, Mapping):
        raise SpecError("spec.namespaceSelector", "must be a label selector")
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for index, expression in enumerate(selector.get("matchExpressions") or []):
        key, operator = expression.get("key"), expression.get("operator")
        values = list(expression.get("values") or [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise SpecError(
                f"spec.namespaceSelector.matchExpressions[{index}].operator", f"unknown {operator!r}"
            )
    return True


def parse_policy(name: str, spec: Mapping[str, Any]) -> Policy:
    freezes = []
    for index, raw in enumerate(spec.get("freezes") or []):
        start, end = parse_time(raw.get("start")), parse_time(raw.get("end"))
        if start is None or end is None or end <= start:
            raise SpecError(f"spec.freezes[{index}]", "needs an RFC 3339 start and a later end")
        freezes.append(Freeze(name, str(raw.get("reason") or "change freeze"), start, end))
    windows = [
        Gate(f"{name}/{raw.get('name')}", parse_window(raw, f"spec.windows[{index}]"), None)
        for index, raw in enumerate(spec.get("windows") or [])
    ]
    gates = [
        replace(gate, name=f"{name}/{gate.name}") for gate in parse_gates(spec.get("gates"), "spec.gates")
    ]
    notifications = parse_notifications(spec.get("notifications"), policy=name)
    return Policy(name, tuple(freezes), (*windows, *gates), notifications)


def policy_gates(policies: Sequence[Policy]) -> tuple[Gate, ...]:
    return tuple(gate for policy in policies for gate in policy.gates)


def active_freezes(policies: Sequence[Policy], now: datetime) -> list[Freeze]:
    return [freeze for policy in policies for freeze in policy.freezes if freeze.active(now)]


def freeze_changes(policies: Sequence[Policy], now: datetime) -> list[datetime]:
    """The moments a freeze starts or ends, so the operator wakes exactly then."""
    moments = [m for p in policies for f in p.freezes for m in (f.start, f.end) if m is not None]
    return [m for m in moments if m > now]
