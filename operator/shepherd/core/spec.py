"""The Release spec as plain, validated data.

The CRD schema rejects most bad input at `kubectl apply`; this parser is the
operator's own line of defence for what reaches it anyway (an older CRD, a
client that skipped validation), and it names the offending field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import durationpy

DEFAULT_PROGRESS_DEADLINE = timedelta(minutes=10)
DEFAULT_REVISION_HISTORY_LIMIT = 10
MAX_COMPONENTS = 20

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class SpecError(ValueError):
    """A spec the operator cannot act on; `field` is the Kubernetes-style path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Component:
    name: str
    replicas: int
    template: Mapping[str, Any]


@dataclass(frozen=True)
class SetWeight:
    weight: int


@dataclass(frozen=True)
class Pause:
    duration: timedelta | None  # None waits for a manual promote


Step = SetWeight | Pause


@dataclass(frozen=True)
class ReleaseSpec:
    version: str
    paused: bool
    progress_deadline: timedelta
    components: tuple[Component, ...]
    steps: tuple[Step, ...]
    bake: timedelta | None
    automatic_rollback: bool
    revision_history_limit: int

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


@dataclass(frozen=True)
class RevisionContent:
    """What a revision rolls out; a change of any of it is a new revision.

    Replica counts are deliberately not content: scaling applies in place,
    like scaling a Deployment, without a canary.
    """

    version: str
    templates: Mapping[str, Mapping[str, Any]]  # component name -> PodTemplateSpec

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "components": [{"name": n, "template": t} for n, t in sorted(self.templates.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RevisionContent:
        components = data.get("components") or []
        return cls(
            version=str(data.get("version", "")),
            templates={str(c["name"]): c.get("template") or {} for c in components},
        )

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def content_of(spec: ReleaseSpec) -> RevisionContent:
    return RevisionContent(spec.version, {c.name: c.template for c in spec.components})


def canary_replicas(replicas: int, weight: int) -> int:
    """Replica-ratio routing: the canary's share, rounded up so any weight > 0 gets a pod."""
    return math.ceil(replicas * weight / 100)


def parse_duration(value: Any, field: str) -> timedelta:
    if not isinstance(value, str):
        raise SpecError(field, f"must be a duration string such as 30s, 2m or 1h30m, not {value!r}")
    try:
        parsed = durationpy.from_str(value)
    except (durationpy.DurationError, ValueError):
        raise SpecError(
            field, f"invalid duration {value!r}: use Go syntax such as 30s, 2m or 1h30m"
        ) from None
    if parsed < timedelta(0):
        raise SpecError(field, f"duration {value!r} must not be negative")
    return parsed


def parse_release_name(name: str) -> None:
    if len(name) > 63:
        raise SpecError("metadata.name", "must be at most 63 characters: it becomes a label value")


def parse_spec(raw: Mapping[str, Any] | None) -> ReleaseSpec:
    """Validate and normalise `spec`; raise SpecError naming the first bad field."""
    spec = _mapping(raw, "spec")
    version = spec.get("version")
    if not isinstance(version, str) or not version:
        raise SpecError("spec.version", "is required: the version label of this revision")
    if len(version) > 63 or not _LABEL_VALUE.match(version):
        raise SpecError(
            "spec.version",
            f"{version!r} must be a valid label value: at most 63 of A-Z a-z 0-9 - _ . "
            "starting and ending alphanumeric",
        )
    paused = _boolean(spec.get("paused", False), "spec.paused")
    deadline_raw = spec.get("progressDeadline")
    deadline = (
        DEFAULT_PROGRESS_DEADLINE
        if deadline_raw is None
        else parse_duration(deadline_raw, "spec.progressDeadline")
    )
    if deadline <= timedelta(0):
        raise SpecError("spec.progressDeadline", "must be longer than 0s")
    components = _components(spec.get("components"))
    strategy = _mapping(spec.get("strategy"), "spec.strategy")
    canary = _mapping(strategy.get("canary"), "spec.strategy.canary")
    steps = _steps(canary.get("steps"))
    post = _mapping(spec.get("postRelease"), "spec.postRelease")
    bake = None if post.get("bake") is None else parse_duration(post["bake"], "spec.postRelease.bake")
    rollback = _mapping(spec.get("rollback"), "spec.rollback")
    automatic = _boolean(rollback.get("automatic", True), "spec.rollback.automatic")
    limit = rollback.get("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
        raise SpecError("spec.rollback.revisionHistoryLimit", f"must be an integer 1..100, not {limit!r}")
    return ReleaseSpec(
        version=version,
        paused=paused,
        progress_deadline=deadline,
        components=components,
        steps=steps,
        bake=bake if bake else None,
        automatic_rollback=automatic,
        revision_history_limit=limit,
    )


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(field, f"must be an object, not {type(value).__name__}")
    return value


def _boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(field, f"must be true or false, not {value!r}")
    return value


def _components(raw: Any) -> tuple[Component, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise SpecError("spec.components", "must list at least one component")
    if len(raw) > MAX_COMPONENTS:
        raise SpecError("spec.components", f"must list at most {MAX_COMPONENTS} components, not {len(raw)}")
    seen: set[str] = set()
    components = []
    for index, item in enumerate(raw):
        field = f"spec.components[{index}]"
        item = _mapping(item, field)
        name = item.get("name")
        if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
            raise SpecError(f"{field}.name", f"{name!r} must be a DNS label: lowercase a-z 0-9 and -")
        if name in seen:
            raise SpecError(f"{field}.name", f"duplicate component name {name!r}: names must be unique")
        seen.add(name)
        replicas = item.get("replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise SpecError(f"{field}.replicas", f"must be an integer >= 1, not {replicas!r}")
        template = _mapping(item.get("template"), f"{field}.template")
        containers = _mapping(template.get("spec"), f"{field}.template.spec").get("containers")
        if not isinstance(containers, Sequence) or not containers:
            raise SpecError(f"{field}.template.spec.containers", "must list at least one container")
        components.append(Component(name=name, replicas=replicas, template=template))
    return tuple(components)


def _steps(raw: Any) -> tuple[Step, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise SpecError("spec.strategy.canary.steps", "must be a list of steps")
    steps: list[Step] = []
    last_weight = 0
    for index, item in enumerate(raw):
        field = f"spec.strategy.canary.steps[{index}]"
        item = _mapping(item, field)
        kinds = [k for k in ("setWeight", "pause") if k in item]
        if len(kinds) != 1:
            raise SpecError(field, "each step sets exactly one of setWeight, pause")
        if kinds == ["setWeight"]:
            weight = item["setWeight"]
            if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
                raise SpecError(f"{field}.setWeight", f"must be an integer 0..100, not {weight!r}")
            if weight < last_weight:
                raise SpecError(
                    f"{field}.setWeight", f"weights must not decrease: {weight} follows {last_weight}"
                )
            last_weight = weight
            steps.append(SetWeight(weight))
        else:
            pause = _mapping(item["pause"], f"{field}.pause")
            duration = pause.get("duration")
            steps.append(
                Pause(None if duration is None else parse_duration(duration, f"{field}.pause.duration"))
            )
    return tuple(steps)
