"""The Release spec as plain, validated data.

The CRD schema rejects most bad input at `kubectl apply`; this parser is the
operator's own line of defence for what reaches it anyway (an older CRD, a
client that skipped validation), and it names the offending field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import time, timedelta
from functools import cached_property
from graphlib import CycleError, TopologicalSorter
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import durationpy

from shepherd.core import reasons
from shepherd.core.errors import SpecError as SpecError  # re-exported: the parsers of spec.py raise it
from shepherd.core.plan import ANNOUNCEMENTS, Plan, parse_plan
from shepherd.core.promql import VARIABLES, template_variables
from shepherd.core.status import Phase

DEFAULT_PROGRESS_DEADLINE = timedelta(minutes=10)
DEFAULT_ANALYSIS_INTERVAL = timedelta(seconds=30)
DEFAULT_QUERY_TIMEOUT = timedelta(seconds=10)
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_REPLICAS = 1
MAX_COMPONENTS = 20
MAX_CONFIG_ENTRIES = 20
MAX_CONFIG_BYTES = 1024 * 1024  # what the API server allows in one ConfigMap's data and binaryData together
CONFIG_HASH_LENGTH = 10
# A ConfigMap's name is a DNS subdomain of at most 253 characters, "-<hash>" included.
MAX_CONFIG_NAME = 253 - 1 - CONFIG_HASH_LENGTH
MAX_MIGRATIONS = 10
MAX_BACKOFF_LIMIT = 10
MAX_ROLES = 10  # entries of an approval gate's `from`
MAX_GROUP = 253
MAX_GATE_DESCRIPTION = 1024
MAX_GATE_OWNER = 253

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


@dataclass(frozen=True)
class Component:
    name: str
    replicas: int
    template: Mapping[str, Any]
    depends_on: tuple[str, ...] = ()  # components whose canary is promoted before this one's starts


@dataclass(frozen=True)
class ConfigEntry:
    """Versioned configuration: rolled out as the immutable ConfigMap `<name>-<content hash>`."""

    name: str
    data: Mapping[str, str]
    binary_data: Mapping[str, str]  # base64, re-encoded canonically so equal bytes hash equally

    @cached_property  # up to a MiB to hash, asked for on every reconcile
    def content_hash(self) -> str:
        canonical = json.dumps(
            {"data": self.data, "binaryData": self.binary_data}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:CONFIG_HASH_LENGTH]

    @property
    def hashed_name(self) -> str:
        return f"{self.name}-{self.content_hash}"

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"name": self.name}
        if self.data:
            record["data"] = dict(self.data)
        if self.binary_data:
            record["binaryData"] = dict(self.binary_data)
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfigEntry:
        return cls(str(data["name"]), dict(data.get("data") or {}), dict(data.get("binaryData") or {}))


@dataclass(frozen=True)
class SetWeight:
    weight: int


@dataclass(frozen=True)
class Pause:
    duration: timedelta | None  # None waits for a manual promote


@dataclass(frozen=True)
class AnalysisStep:
    metrics: tuple[str, ...] | None  # None: every metric of spec.analysis


@dataclass(frozen=True)
class SetCanaryScale:
    """With Gateway API routing, the canary's pods apart from its traffic weight; neither set: match it."""

    replicas: int | None = None
    weight: int | None = None


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    type: str  # Gateway API's HTTPHeaderMatch type: Exact or RegularExpression (a prefix becomes one)
    value: str


@dataclass(frozen=True)
class SetHeaderRoute:
    """Send requests whose headers match to the canary only; no matches removes the header route."""

    name: str
    matches: tuple[HeaderMatch, ...]


Step = SetWeight | Pause | AnalysisStep | SetCanaryScale | SetHeaderRoute

MAX_ROUTES = 10
INJECTED_RULE_PREFIX = "shepherd-"  # the names of the header-route rules Shepherd adds to an HTTPRoute
MAX_WEIGHT_SCALE = 10_000


@dataclass(frozen=True)
class RouteRef:
    """An existing HTTPRoute whose weights Shepherd sets; `rules` by name (none: every rule that sends
    to both of the component's Services)."""

    name: str
    namespace: str | None  # None: the Release's
    component: str
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayRouting:
    routes: tuple[RouteRef, ...]
    services: Mapping[str, tuple[str, str]]  # component -> (stable, canary) Services named by the user
    weight_scale: int = 100

    def service_names(self, release: str, component: str) -> tuple[str, str]:
        """The component's stable and canary Services: the user's, or the ones Shepherd manages."""
        return self.services.get(component) or managed_service_names(release, component)

    def managed(self, component: str) -> bool:
        return component not in self.services


def managed_service_names(release: str, component: str) -> tuple[str, str]:
    return f"{release}-{component}-stable", f"{release}-{component}-canary"


@dataclass(frozen=True)
class PrometheusSpec:
    address: str
    secret: str | None  # Secret with `token`, or `username` and `password`
    ca_secret: str | None  # Secret with `ca.crt`
    insecure_skip_verify: bool
    headers: Mapping[str, str]
    timeout: timedelta


@dataclass(frozen=True)
class Compare:
    """Judge the canary against the stable version measured in the same run."""

    max_increase: float | None  # a fraction: "10%" -> 0.1
    max_decrease: float | None
    test: str | None  # "mann-whitney"
    alpha: float
    direction: str  # "increase" or "decrease": which way is worse


@dataclass(frozen=True)
class Metric:
    name: str
    query: str
    min: float | None
    max: float | None
    count: int
    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int
    interval: timedelta | None
    dry_run: bool
    compare: Compare | None

    @property
    def per_component(self) -> bool:
        return "component" in template_variables(self.query)


@dataclass(frozen=True)
class AnalysisSpec:
    prometheus: PrometheusSpec
    interval: timedelta
    metrics: tuple[Metric, ...]

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    def interval_of(self, metric: Metric) -> timedelta:
        return metric.interval or self.interval


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Role:
    """A Kubernetes group whose members sign off for it, and how many distinct ones must."""

    group: str
    count: int


@dataclass(frozen=True)
class ApprovalGate:
    """`count` approvals from anyone, or (`roles`, spec `from`) each role's own count of sign-offs; with
    roles, `count` is their sum."""

    count: int = 1
    roles: tuple[Role, ...] = ()


@dataclass(frozen=True)
class WindowGate:
    """Traffic may move only inside the window; end before start crosses midnight."""

    days: frozenset[int]  # 0 = Monday
    start: time
    end: time
    time_zone: str


@dataclass(frozen=True)
class MetricGate:
    """Pass while a Prometheus query returns one sample within the bounds."""

    query: str
    min: float | None
    max: float | None


@dataclass(frozen=True)
class ReleaseGate:
    name: str
    namespace: str | None
    version: str | None


@dataclass(frozen=True)
class WebhookGate:
    """Pass while an HTTP endpoint (a CI status, a change ticket) answers 2xx."""

    url: str  # may hold {{namespace}}, {{release}}, {{version}}, {{revision}}
    method: str  # GET or POST
    headers_secret: str | None  # a Secret whose keys are header names and values header values
    timeout: timedelta  # of one request
    interval: timedelta  # between requests while the gate is pending


@dataclass(frozen=True)
class JobGate:
    """Pass when a Job the operator runs for the revision succeeds; fail when it fails."""

    template: Mapping[str, Any]  # JobTemplateSpec


GateKind = ApprovalGate | WindowGate | MetricGate | WebhookGate | JobGate | ReleaseGate
GATE_KINDS = ("approval", "window", "metric", "webhook", "job", "release")


@dataclass(frozen=True)
class Gate:
    name: str
    kind: GateKind
    timeout: timedelta | None
    description: str = ""  # what the readiness checklist says the item is
    owner: str = ""  # the team answering for it


@dataclass(frozen=True)
class Migration:
    """A Job that must succeed before the revision takes any traffic, and the Job that undoes it."""

    name: str
    template: Mapping[str, Any]  # JobTemplateSpec, spec.backoffLimit applied
    timeout: timedelta | None
    rollback_template: Mapping[str, Any] | None = None  # the down migration, run on a rollback

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "template": self.template}
        if self.timeout is not None:
            data["timeout"] = durationpy.to_str(self.timeout)
        if self.rollback_template is not None:
            data["rollbackTemplate"] = self.rollback_template
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Migration:
        """From a revision record, which the operator wrote itself (its spec was parsed then)."""
        timeout = data.get("timeout")
        rollback = data.get("rollbackTemplate")
        return cls(
            name=str(data.get("name", "")),
            template=data.get("template") or {},
            timeout=durationpy.from_str(timeout) if isinstance(timeout, str) else None,
            rollback_template=rollback if isinstance(rollback, Mapping) else None,
        )


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
    analysis: AnalysisSpec | None = None
    bake_metrics: tuple[str, ...] | None = None  # None: every metric of spec.analysis
    gates: tuple[Gate, ...] = ()
    notifications: tuple[NotificationSpec, ...] = ()
    config: tuple[ConfigEntry, ...] = ()
    migrations: tuple[Migration, ...] = ()
    routing: GatewayRouting | None = None  # None: split by replica ratio
    plan: Plan | None = None  # when it may start, what it contains, who answers for it

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    def metrics_for(self, names: tuple[str, ...] | None) -> tuple[Metric, ...]:
        if self.analysis is None:
            return ()
        if names is None:
            return self.analysis.metrics
        return tuple(m for m in self.analysis.metrics if m.name in names)


@dataclass(frozen=True)
class RevisionContent:
    """What a revision rolls out; a change of any of it is a new revision.

    Replica counts are deliberately not content: scaling applies in place,
    like scaling a Deployment, without a canary.
    """

    version: str
    templates: Mapping[str, Mapping[str, Any]]  # component name -> PodTemplateSpec, as written
    config: tuple[ConfigEntry, ...] = ()  # sorted by name: their order in the spec is not content
    migrations: tuple[Migration, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "version": self.version,
            "components": [{"name": n, "template": t} for n, t in sorted(self.templates.items())],
        }
        # Absent rather than empty: content without config or migrations keeps the hash it had before
        # they existed.
        if self.config:
            record["config"] = [entry.to_dict() for entry in self.config]
        if self.migrations:
            record["migrations"] = [m.to_dict() for m in self.migrations]
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RevisionContent:
        components = data.get("components") or []
        config = (ConfigEntry.from_dict(c) for c in data.get("config") or [])
        migrations = data.get("migrations") or []
        return cls(
            version=str(data.get("version", "")),
            templates={str(c["name"]): c.get("template") or {} for c in components},
            config=tuple(sorted(config, key=lambda entry: entry.name)),
            migrations=tuple(Migration.from_dict(m) for m in migrations if isinstance(m, Mapping)),
        )

    @cached_property  # compared on every pass of the machine; config can make content large
    def hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def content_of(spec: ReleaseSpec) -> RevisionContent:
    config = tuple(sorted(spec.config, key=lambda entry: entry.name))
    templates = {c.name: c.template for c in spec.components}
    return RevisionContent(spec.version, templates, config, spec.migrations)


Waves = tuple[tuple[str, ...], ...]


def waves(spec: ReleaseSpec, names: Iterable[str] | None = None) -> Waves:
    """Components in rollout order: a wave depends only on earlier ones; no dependsOn at all is one wave.

    `names` are the components a revision holds (default: the spec's); a recorded revision's component
    the spec no longer lists has no dependencies, nor does a dependency on a component it lacks count.
    """
    listed = {c.name: c for c in spec.components}
    members = set(listed if names is None else names)
    order = {name: index for index, name in enumerate(listed)}
    sorter = TopologicalSorter(
        {
            name: [d for d in (listed[name].depends_on if name in listed else ()) if d in members]
            for name in members
        }
    )
    sorter.prepare()
    result = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda name: (order.get(name, len(order)), name))
        result.append(tuple(ready))
        sorter.done(*ready)
    return tuple(result)


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
    config = _config(spec.get("config"))
    strategy = _mapping(spec.get("strategy"), "spec.strategy")
    canary = _mapping(strategy.get("canary"), "spec.strategy.canary")
    steps = _steps(canary.get("steps"))
    routing = _routing(canary.get("trafficRouting"), components)
    for index, step in enumerate(steps):
        if isinstance(step, SetCanaryScale | SetHeaderRoute) and routing is None:
            kind = "setCanaryScale" if isinstance(step, SetCanaryScale) else "setHeaderRoute"
            raise SpecError(
                f"spec.strategy.canary.steps[{index}].{kind}",
                "needs spec.strategy.canary.trafficRouting.gatewayAPI: with replica routing, the canary's "
                "pods are its traffic",
            )
    post = _mapping(spec.get("postRelease"), "spec.postRelease")
    bake = None if post.get("bake") is None else parse_duration(post["bake"], "spec.postRelease.bake")
    analysis = None if spec.get("analysis") is None else _analysis(spec["analysis"])
    gates = parse_gates(spec.get("gates"))
    migrations = _migrations(spec.get("migrations"))
    for index, gate in enumerate(gates):
        if isinstance(gate.kind, MetricGate) and analysis is None:
            raise SpecError(f"spec.gates[{index}].metric", "needs spec.analysis.prometheus to query")
    bake_metrics = _metric_names(post.get("metrics"), "spec.postRelease.metrics", analysis)
    for index, step in enumerate(steps):
        if isinstance(step, AnalysisStep):
            field = f"spec.strategy.canary.steps[{index}].analysis"
            if analysis is None:
                raise SpecError(field, "an analysis step needs spec.analysis with at least one metric")
            _metric_names(step.metrics, f"{field}.metrics", analysis)
    plan = parse_plan(spec.get("plan"))
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
        analysis=analysis,
        bake_metrics=bake_metrics,
        gates=gates,
        notifications=parse_notifications(spec.get("notifications")),
        config=config,
        migrations=migrations,
        routing=routing,
        plan=plan,
    )


def _list(raw: Any, field: str, what: str, most: int | None = None) -> Sequence[Any]:
    """A list field; an absent one is empty."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise SpecError(field, f"must be a list of {what}")
    if most is not None and len(raw) > most:
        raise SpecError(field, f"must list at most {most} {what}, not {len(raw)}")
    return raw


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
    components: list[Component] = []
    for index, item in enumerate(raw):
        field = f"spec.components[{index}]"
        item = _mapping(item, field)
        name = _unique_name(item, field, [c.name for c in components], "component")
        replicas = item.get("replicas", DEFAULT_REPLICAS)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise SpecError(f"{field}.replicas", f"must be an integer >= 1, not {replicas!r}")
        template = _mapping(item.get("template"), f"{field}.template")
        containers = _mapping(template.get("spec"), f"{field}.template.spec").get("containers")
        if not isinstance(containers, Sequence) or not containers:
            raise SpecError(f"{field}.template.spec.containers", "must list at least one container")
        depends_on = _depends_on(item.get("dependsOn"), f"{field}.dependsOn", name)
        components.append(Component(name=name, replicas=replicas, template=template, depends_on=depends_on))
    _check_order(components)
    return tuple(components)


def _depends_on(raw: Any, field: str, name: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    names = _strings(raw, field)
    for index, other in enumerate(names):
        if other == name:
            raise SpecError(f"{field}[{index}]", f"component {name} cannot depend on itself")
        if other in names[:index]:
            raise SpecError(f"{field}[{index}]", f"{other!r} is listed twice")
    return tuple(names)


def _check_order(components: Sequence[Component]) -> None:
    """Every dependency names another component, and following them never comes back around."""
    names = [c.name for c in components]
    for index, component in enumerate(components):
        for position, other in enumerate(component.depends_on):
            if other not in names:
                raise SpecError(
                    f"spec.components[{index}].dependsOn[{position}]",
                    f"unknown component {other!r}; the components are {', '.join(names)}",
                )
    try:
        TopologicalSorter({c.name: c.depends_on for c in components}).prepare()
    except CycleError as error:
        # graphlib lists the cycle as [a, ..., a] against the dependencies; read from the one listed first.
        cycle = list(reversed(error.args[1][1:]))
        index = min(names.index(name) for name in cycle)
        start = cycle.index(names[index])
        path = " -> ".join([*cycle[start:], *cycle[:start], names[index]])
        raise SpecError(
            f"spec.components[{index}].dependsOn",
            f"dependsOn forms a cycle {path}: none of them could ever start",
        ) from None


def _config(raw: Any) -> tuple[ConfigEntry, ...]:
    entries: list[ConfigEntry] = []
    for index, item in enumerate(_list(raw, "spec.config", "config entries", MAX_CONFIG_ENTRIES)):
        field = f"spec.config[{index}]"
        item = _mapping(item, field)
        name = item.get("name")
        if not isinstance(name, str) or len(name) > MAX_CONFIG_NAME or not _DNS_SUBDOMAIN.match(name):
            raise SpecError(
                f"{field}.name",
                f"{name!r} must be a DNS subdomain of at most {MAX_CONFIG_NAME} characters "
                "(lowercase a-z 0-9, - and .): the ConfigMap is named <name>-<content hash>",
            )
        if any(e.name == name for e in entries):
            raise SpecError(f"{field}.name", f"duplicate config name {name!r}: names must be unique")
        data = _config_data(item.get("data"), f"{field}.data")
        binary = {
            key: _base64(value, f"{field}.binaryData[{key}]")
            for key, value in _config_data(item.get("binaryData"), f"{field}.binaryData").items()
        }
        both = sorted(set(data) & set(binary))
        if both:
            raise SpecError(
                f"{field}.binaryData[{both[0]}]", "is also in data: a key may be in one of them only"
            )
        size = sum(len(k) + len(v.encode()) for k, v in data.items()) + sum(
            len(k) + len(base64.b64decode(v)) for k, v in binary.items()
        )
        if size > MAX_CONFIG_BYTES:
            raise SpecError(
                field, f"data and binaryData hold {size} bytes; a ConfigMap holds at most {MAX_CONFIG_BYTES}"
            )
        entries.append(ConfigEntry(name, data, binary))
    return tuple(entries)


def _config_data(raw: Any, field: str) -> dict[str, str]:
    data = _mapping(raw, field)
    for key, value in data.items():
        if not isinstance(key, str) or not _is_data_key(key):
            raise SpecError(
                f"{field}[{key}]",
                "a key must be at most 253 of a-z A-Z 0-9 - _ . (not . or .., nor starting with ..)",
            )
        if not isinstance(value, str):
            raise SpecError(f"{field}[{key}]", f"must be a string, not {type(value).__name__}")
    return dict(data)


def _is_data_key(key: str) -> bool:
    """As the API server checks a ConfigMap's or Secret's key: a file name in a volume, never . or .. or
    under them."""
    return len(key) <= 253 and bool(_DATA_KEY.match(key)) and key != "." and not key.startswith("..")


def _base64(value: str, field: str) -> str:
    try:
        decoded = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise SpecError(field, "must be base64-encoded bytes") from None
    return base64.b64encode(decoded).decode()


def _unique_name(item: Mapping[str, Any], field: str, taken: Sequence[str], kind: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
        raise SpecError(f"{field}.name", f"{name!r} must be a DNS label: lowercase a-z 0-9 and -")
    if name in taken:
        raise SpecError(f"{field}.name", f"duplicate {kind} name {name!r}: names must be unique")
    return name


STEP_KINDS = ("setWeight", "pause", "analysis", "setCanaryScale", "setHeaderRoute")


def _steps(raw: Any) -> tuple[Step, ...]:
    steps: list[Step] = []
    last_weight = 0
    for index, item in enumerate(_list(raw, "spec.strategy.canary.steps", "steps")):
        field = f"spec.strategy.canary.steps[{index}]"
        item = _mapping(item, field)
        kinds = [k for k in STEP_KINDS if k in item]
        if len(kinds) != 1:
            raise SpecError(field, f"each step sets exactly one of {', '.join(STEP_KINDS)}")
        if kinds == ["setCanaryScale"]:
            steps.append(_canary_scale(item["setCanaryScale"], f"{field}.setCanaryScale"))
            continue
        if kinds == ["setHeaderRoute"]:
            steps.append(_header_route(item["setHeaderRoute"], f"{field}.setHeaderRoute"))
            continue
        if kinds == ["analysis"]:
            names = _mapping(item["analysis"], f"{field}.analysis").get("metrics")
            steps.append(
                AnalysisStep(None if names is None else tuple(_strings(names, f"{field}.analysis.metrics")))
            )
            continue
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


def _canary_scale(raw: Any, field: str) -> SetCanaryScale:
    scale = _mapping(raw, field)
    kinds = [k for k in ("replicas", "weight", "matchTrafficWeight") if k in scale]
    if len(kinds) != 1:
        raise SpecError(field, "sets exactly one of replicas, weight, matchTrafficWeight")
    value = scale[kinds[0]]
    if kinds == ["matchTrafficWeight"]:
        if value is not True:
            raise SpecError(f"{field}.matchTrafficWeight", "must be true (omit the step to keep the scale)")
        return SetCanaryScale()
    upper = 100 if kinds == ["weight"] else 10_000
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise SpecError(f"{field}.{kinds[0]}", f"must be an integer 0..{upper}, not {value!r}")
    return SetCanaryScale(replicas=value) if kinds == ["replicas"] else SetCanaryScale(weight=value)


def _header_route(raw: Any, field: str) -> SetHeaderRoute:
    route = _mapping(raw, field)
    name = route.get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > 40:
        raise SpecError(f"{field}.name", f"must be a DNS label of at most 40 characters, not {name!r}")
    matches = []
    for index, item in enumerate(_list(route.get("match"), f"{field}.match", "header matches", 16)):
        where = f"{field}.match[{index}]"
        item = _mapping(item, where)
        header = item.get("headerName")
        if not isinstance(header, str) or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}", header):
            raise SpecError(f"{where}.headerName", f"must be an HTTP header name, not {header!r}")
        value = _mapping(item.get("headerValue"), f"{where}.headerValue")
        kinds = [k for k in ("exact", "prefix", "regex") if k in value]
        if len(kinds) != 1 or not isinstance(value[kinds[0]], str) or not value[kinds[0]]:
            raise SpecError(f"{where}.headerValue", "sets exactly one of exact, prefix, regex, as a string")
        text = value[kinds[0]]
        if kinds == ["exact"]:
            matches.append(HeaderMatch(header, "Exact", text))
        elif kinds == ["prefix"]:
            matches.append(HeaderMatch(header, "RegularExpression", "^" + re.escape(text) + ".*"))
        else:
            try:
                re.compile(text)
            except re.error as error:
                raise SpecError(
                    f"{where}.headerValue.regex", f"is not a regular expression: {error}"
                ) from None
            matches.append(HeaderMatch(header, "RegularExpression", text))
    return SetHeaderRoute(name, tuple(matches))


def _routing(raw: Any, components: Sequence[Component]) -> GatewayRouting | None:
    field = "spec.strategy.canary.trafficRouting"
    routing = _mapping(raw, field)
    if "gatewayAPI" not in routing:
        return None
    if "replicas" in routing:
        raise SpecError(field, "sets exactly one routing kind: replicas or gatewayAPI")
    field += ".gatewayAPI"
    gateway = _mapping(routing["gatewayAPI"], field)
    names = [c.name for c in components]
    only = names[0] if len(names) == 1 else None
    if ("httpRoute" in gateway) == ("httpRoutes" in gateway):
        raise SpecError(field, "sets exactly one of httpRoute (one route's name) or httpRoutes (a list)")
    routes: list[RouteRef] = []
    if "httpRoute" in gateway:
        name = gateway["httpRoute"]
        if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
            raise SpecError(f"{field}.httpRoute", f"must be an HTTPRoute's name, not {name!r}")
        if only is None:
            raise SpecError(
                f"{field}.httpRoute", "names no component: with several components, list httpRoutes"
            )
        routes.append(RouteRef(name, None, only))
    for index, item in enumerate(
        _list(gateway.get("httpRoutes"), f"{field}.httpRoutes", "routes", MAX_ROUTES)
    ):
        where = f"{field}.httpRoutes[{index}]"
        item = _mapping(item, where)
        name, namespace = item.get("name"), item.get("namespace")
        if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
            raise SpecError(f"{where}.name", f"must be an HTTPRoute's name, not {name!r}")
        if namespace is not None and (not isinstance(namespace, str) or not _DNS_LABEL.match(namespace)):
            raise SpecError(f"{where}.namespace", f"must be a namespace's name, not {namespace!r}")
        component = item.get("component", only)
        if component not in names:
            allowed = ", ".join(names)
            raise SpecError(
                f"{where}.component", f"must name one of the components ({allowed}), not {component!r}"
            )
        rules = tuple(_strings(item.get("rules") or [], f"{where}.rules"))
        if any(rule.startswith(INJECTED_RULE_PREFIX) for rule in rules):
            raise SpecError(
                f"{where}.rules", f"rule names starting {INJECTED_RULE_PREFIX} are Shepherd's own"
            )
        ref = RouteRef(name, namespace, str(component), rules)
        if any((r.name, r.namespace) == (ref.name, ref.namespace) for r in routes):
            raise SpecError(f"{where}.name", f"HTTPRoute {name} is listed twice")
        routes.append(ref)
    services: dict[str, tuple[str, str]] = {}
    for index, item in enumerate(_list(gateway.get("services"), f"{field}.services", "services")):
        where = f"{field}.services[{index}]"
        item = _mapping(item, where)
        component = item.get("component", only)
        if component not in names:
            allowed = ", ".join(names)
            raise SpecError(
                f"{where}.component", f"must name one of the components ({allowed}), not {component!r}"
            )
        pair = []
        for role in ("stable", "canary"):
            value = item.get(role)
            if not isinstance(value, str) or not _DNS_LABEL.match(value):
                raise SpecError(f"{where}.{role}", f"must name the {role} Service, not {value!r}")
            pair.append(value)
        if pair[0] == pair[1]:
            raise SpecError(f"{where}.canary", "must be another Service than the stable one")
        services[str(component)] = (pair[0], pair[1])
    scale = gateway.get("weightScale", 100)
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= MAX_WEIGHT_SCALE:
        raise SpecError(f"{field}.weightScale", f"must be an integer 1..{MAX_WEIGHT_SCALE}, not {scale!r}")
    return GatewayRouting(tuple(routes), services, scale)


def _strings(value: Any, field: str) -> list[str]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not all(isinstance(v, str) for v in value)
    ):
        raise SpecError(field, "must be a list of strings")
    return list(value)


def _metric_names(names: Any, field: str, analysis: AnalysisSpec | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    listed = _strings(names, field)
    if analysis is None:
        raise SpecError(field, "names metrics, but spec.analysis is not set")
    known = [m.name for m in analysis.metrics]
    for name in listed:
        if name not in known:
            raise SpecError(field, f"unknown metric {name!r}; spec.analysis.metrics has {', '.join(known)}")
    return tuple(listed)


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(field, f"must be a number, not {value!r}")
    return float(value)


def _count(value: Any, field: str, default: int, low: int) -> int:
    value = default if value is None else value
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 100:
        raise SpecError(field, f"must be an integer {low}..100, not {value!r}")
    return value


def _percent(value: Any, field: str) -> float | None:
    if value is None:
        return None
    text = str(value).strip()
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)%", text)
    if match is None:
        raise SpecError(field, f"must be a percentage such as 10%, not {value!r}")
    return float(match.group(1)) / 100


def _analysis(raw: Any) -> AnalysisSpec:
    analysis = _mapping(raw, "spec.analysis")
    prometheus = _mapping(analysis.get("prometheus"), "spec.analysis.prometheus")
    address = prometheus.get("address")
    if not isinstance(address, str) or not re.match(r"^https?://", address):
        raise SpecError(
            "spec.analysis.prometheus.address", f"must be an http:// or https:// URL, not {address!r}"
        )
    headers = _mapping(prometheus.get("headers"), "spec.analysis.prometheus.headers")
    if not all(isinstance(v, str) for v in headers.values()):
        raise SpecError("spec.analysis.prometheus.headers", "values must be strings")
    timeout_raw = prometheus.get("timeout")
    connection = PrometheusSpec(
        address=address.rstrip("/"),
        secret=_mapping(prometheus.get("secretRef"), "spec.analysis.prometheus.secretRef").get("name"),
        ca_secret=_mapping(prometheus.get("caSecretRef"), "spec.analysis.prometheus.caSecretRef").get("name"),
        insecure_skip_verify=_boolean(
            prometheus.get("insecureSkipVerify", False), "spec.analysis.prometheus.insecureSkipVerify"
        ),
        headers=dict(headers),
        timeout=DEFAULT_QUERY_TIMEOUT
        if timeout_raw is None
        else parse_duration(timeout_raw, "spec.analysis.prometheus.timeout"),
    )
    interval_raw = analysis.get("interval")
    interval = (
        DEFAULT_ANALYSIS_INTERVAL
        if interval_raw is None
        else parse_duration(interval_raw, "spec.analysis.interval")
    )
    raw_metrics = analysis.get("metrics")
    if not isinstance(raw_metrics, Sequence) or isinstance(raw_metrics, str) or not raw_metrics:
        raise SpecError("spec.analysis.metrics", "must list at least one metric")
    metrics: list[Metric] = []
    for index, item in enumerate(raw_metrics):
        metric = _metric(_mapping(item, f"spec.analysis.metrics[{index}]"), f"spec.analysis.metrics[{index}]")
        if any(m.name == metric.name for m in metrics):
            raise SpecError(f"spec.analysis.metrics[{index}].name", f"duplicate metric name {metric.name!r}")
        metrics.append(metric)
    return AnalysisSpec(connection, interval, tuple(metrics))


def _metric(item: Mapping[str, Any], field: str) -> Metric:
    name = item.get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        raise SpecError(f"{field}.name", f"{name!r} must be a DNS label: lowercase a-z 0-9 and -")
    query = item.get("query")
    if not isinstance(query, str) or not query.strip():
        raise SpecError(f"{field}.query", f"metric {name}: a PromQL query is required")
    unknown = sorted(template_variables(query) - set(VARIABLES))
    if unknown:
        allowed = ", ".join("{{" + v + "}}" for v in VARIABLES)
        raise SpecError(
            f"{field}.query", f"metric {name}: unknown variable {{{{{unknown[0]}}}}}; allowed: {allowed}"
        )
    low, high = _number(item.get("min"), f"{field}.min"), _number(item.get("max"), f"{field}.max")
    if low is not None and high is not None and low > high:
        raise SpecError(f"{field}.min", f"metric {name}: min {low:g} is above max {high:g}")
    compare = (
        None
        if item.get("compare") is None
        else _compare(_mapping(item["compare"], f"{field}.compare"), field)
    )
    if low is None and high is None and compare is None:
        raise SpecError(field, f"metric {name}: set min, max or compare, or the metric can never fail")
    interval = item.get("interval")
    return Metric(
        name=name,
        query=query,
        min=low,
        max=high,
        count=_count(item.get("count"), f"{field}.count", 1, 1),
        failure_limit=_count(item.get("failureLimit"), f"{field}.failureLimit", 0, 0),
        inconclusive_limit=_count(item.get("inconclusiveLimit"), f"{field}.inconclusiveLimit", 0, 0),
        consecutive_error_limit=_count(
            item.get("consecutiveErrorLimit"), f"{field}.consecutiveErrorLimit", 4, 0
        ),
        interval=None if interval is None else parse_duration(interval, f"{field}.interval"),
        dry_run=_boolean(item.get("dryRun", False), f"{field}.dryRun"),
        compare=compare,
    )


def _compare(compare: Mapping[str, Any], field: str) -> Compare:
    field = f"{field}.compare"
    if compare.get("baseline") != "stable":
        raise SpecError(f"{field}.baseline", "must be stable: the canary is compared with the stable version")
    kinds = [k for k in ("maxIncrease", "maxDecrease", "test") if compare.get(k) is not None]
    if len(kinds) != 1:
        raise SpecError(field, "set exactly one of maxIncrease, maxDecrease, test")
    test = compare.get("test")
    if test is not None and test != "mann-whitney":
        raise SpecError(f"{field}.test", f"must be mann-whitney, not {test!r}")
    alpha = _number(compare.get("alpha", 0.05), f"{field}.alpha")
    if alpha is None or not 0 < alpha < 1:
        raise SpecError(f"{field}.alpha", f"must be between 0 and 1, not {alpha!r}")
    direction = compare.get("direction", "increase")
    if direction not in ("increase", "decrease"):
        raise SpecError(f"{field}.direction", f"must be increase or decrease, not {direction!r}")
    return Compare(
        max_increase=_percent(compare.get("maxIncrease"), f"{field}.maxIncrease"),
        max_decrease=_percent(compare.get("maxDecrease"), f"{field}.maxDecrease"),
        test=test,
        alpha=alpha,
        direction=str(direction),
    )


_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def parse_gates(raw: Any, path: str = "spec.gates") -> tuple[Gate, ...]:
    gates: list[Gate] = []
    for index, item in enumerate(_list(raw, path, "gates")):
        field = f"{path}[{index}]"
        item = _mapping(item, field)
        name = item.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            raise SpecError(f"{field}.name", f"{name!r} must be a DNS label: lowercase a-z 0-9 and -")
        if any(g.name == name for g in gates):
            raise SpecError(f"{field}.name", f"duplicate gate name {name!r}")
        kinds = [k for k in GATE_KINDS if k in item]
        if len(kinds) != 1:
            raise SpecError(field, f"each gate sets exactly one of {', '.join(GATE_KINDS)}")
        body = _mapping(item[kinds[0]], f"{field}.{kinds[0]}")
        kind: GateKind
        if kinds == ["approval"]:
            kind = _approval_gate(body, f"{field}.approval")
        elif kinds == ["window"]:
            kind = parse_window(body, f"{field}.window")
        elif kinds == ["metric"]:
            kind = _metric_gate(body, f"{field}.metric")
        elif kinds == ["webhook"]:
            kind = _webhook_gate(body, f"{field}.webhook")
        elif kinds == ["job"]:
            kind = JobGate(job_template(body.get("template"), f"{field}.job.template"))
        else:
            kind = _release_gate(body, f"{field}.release")
        timeout = item.get("timeout")
        gates.append(
            Gate(
                name,
                kind,
                None if timeout is None else parse_duration(timeout, f"{field}.timeout"),
                _text(item.get("description"), f"{field}.description", MAX_GATE_DESCRIPTION),
                _text(item.get("owner"), f"{field}.owner", MAX_GATE_OWNER),
            )
        )
    return tuple(gates)


def _approval_gate(body: Mapping[str, Any], field: str) -> ApprovalGate:
    """Either `count` approvals from anyone, or `from`: each role (a Kubernetes group) its own count."""
    if ("count" in body) == ("from" in body):
        raise SpecError(field, "sets exactly one of count (approvals from anyone) or from (sign-off by role)")
    if "count" in body:
        return ApprovalGate(_count(body["count"], f"{field}.count", 1, 1))
    roles: list[Role] = []
    entries = _list(body["from"], f"{field}.from", "roles", MAX_ROLES)
    if not entries:
        raise SpecError(f"{field}.from", "must list at least one role")
    for index, entry in enumerate(entries):
        where = f"{field}.from[{index}]"
        entry = _mapping(entry, where)
        group = entry.get("group")
        if not isinstance(group, str) or not group or len(group) > MAX_GROUP:
            raise SpecError(f"{where}.group", f"must name a Kubernetes group (1 to {MAX_GROUP} characters)")
        if any(role.group == group for role in roles):
            raise SpecError(f"{where}.group", f"duplicate role {group!r}: give it one count")
        roles.append(Role(group, _count(entry.get("count"), f"{where}.count", 1, 1)))
    return ApprovalGate(count=sum(role.count for role in roles), roles=tuple(roles))


def _text(value: Any, field: str, most: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > most:
        raise SpecError(field, f"must be a string of at most {most} characters")
    return value


def parse_window(body: Mapping[str, Any], field: str) -> WindowGate:
    days = _strings(body.get("days"), f"{field}.days")
    unknown = [d for d in days if d not in DAYS]
    if unknown or not days:
        raise SpecError(f"{field}.days", f"must list days among {', '.join(DAYS)}, not {unknown or days}")
    start, end = _clock(body.get("start"), f"{field}.start"), _clock(body.get("end"), f"{field}.end")
    if start == end:
        raise SpecError(f"{field}.end", "must differ from start: the window would be empty")
    zone = body.get("timeZone")
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(
            f"{field}.timeZone", f"{zone!r} is not an IANA time zone such as Europe/Berlin"
        ) from None
    return WindowGate(frozenset(DAYS.index(d) for d in days), start, end, str(zone))


def _clock(value: Any, field: str) -> time:
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if match is None:
        raise SpecError(field, f"must be a 24-hour time HH:MM such as 09:00, not {value!r}")
    return time(int(match.group(1)), int(match.group(2)))


def _release_gate(body: Mapping[str, Any], field: str) -> ReleaseGate:
    name = body.get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        raise SpecError(f"{field}.name", f"{name!r} must be the name of a Release")
    namespace, version = body.get("namespace"), body.get("version")
    return ReleaseGate(name, str(namespace) if namespace else None, str(version) if version else None)


def _metric_gate(body: Mapping[str, Any], field: str) -> MetricGate:
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise SpecError(f"{field}.query", "a PromQL query is required")
    unknown = sorted(template_variables(query) - set(VARIABLES))
    if unknown:
        raise SpecError(
            f"{field}.query", f"unknown variable {{{{{unknown[0]}}}}}; allowed: {', '.join(VARIABLES)}"
        )
    low, high = _number(body.get("min"), f"{field}.min"), _number(body.get("max"), f"{field}.max")
    if low is None and high is None:
        raise SpecError(field, "set min, max or both, or the gate could never fail")
    if low is not None and high is not None and low > high:
        raise SpecError(f"{field}.min", f"min {low:g} is above max {high:g}")
    return MetricGate(query, low, high)


WEBHOOK_METHODS = ("GET", "POST")
WEBHOOK_VARIABLES = ("namespace", "release", "version", "revision")
DEFAULT_WEBHOOK_TIMEOUT = timedelta(seconds=10)
DEFAULT_WEBHOOK_INTERVAL = timedelta(seconds=30)


def _webhook_gate(body: Mapping[str, Any], field: str) -> WebhookGate:
    url = body.get("url")
    parsed = urlsplit(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SpecError(f"{field}.url", f"must be an absolute http:// or https:// URL, not {url!r}")
    unknown = sorted(template_variables(str(url)) - set(WEBHOOK_VARIABLES))
    if unknown:
        raise SpecError(
            f"{field}.url",
            f"unknown variable {{{{{unknown[0]}}}}}; allowed: {', '.join(WEBHOOK_VARIABLES)}",
        )
    method = body.get("method", "GET")
    if method not in WEBHOOK_METHODS:
        raise SpecError(f"{field}.method", f"must be one of {', '.join(WEBHOOK_METHODS)}, not {method!r}")
    secret_ref = _mapping(body.get("headersSecretRef"), f"{field}.headersSecretRef")
    secret = secret_ref.get("name")
    referenced = body.get("headersSecretRef") is not None
    if referenced and (not isinstance(secret, str) or not secret):
        raise SpecError(f"{field}.headersSecretRef.name", "must name a Secret in the Release's namespace")
    timeout, interval = (
        _positive_duration(body.get(key), f"{field}.{key}", default)
        for key, default in (("timeout", DEFAULT_WEBHOOK_TIMEOUT), ("interval", DEFAULT_WEBHOOK_INTERVAL))
    )
    return WebhookGate(str(url), str(method), str(secret) if referenced else None, timeout, interval)


def _positive_duration(value: Any, field: str, default: timedelta) -> timedelta:
    if value is None:
        return default
    parsed = parse_duration(value, field)
    if parsed <= timedelta(0):
        raise SpecError(field, "must be longer than 0s")
    return parsed


JOB_RESTART_POLICIES = ("Never", "OnFailure")


def job_template(raw: Any, field: str) -> Mapping[str, Any]:
    """A JobTemplateSpec with at least one container; the API server checks the rest on create."""
    template = _mapping(raw, field)
    job_spec = _mapping(template.get("spec"), f"{field}.spec")
    pod_template = _mapping(job_spec.get("template"), f"{field}.spec.template")
    pod = _mapping(pod_template.get("spec"), f"{field}.spec.template.spec")
    containers = pod.get("containers")
    if not isinstance(containers, Sequence) or isinstance(containers, str) or not containers:
        raise SpecError(f"{field}.spec.template.spec.containers", "a Job needs at least one container")
    restart = pod.get("restartPolicy", "Never")
    if restart not in JOB_RESTART_POLICIES:
        raise SpecError(
            f"{field}.spec.template.spec.restartPolicy",
            f"a Job's pods restart Never or OnFailure, not {restart!r}",
        )
    return template


def _migrations(raw: Any) -> tuple[Migration, ...]:
    migrations: list[Migration] = []
    for index, item in enumerate(_list(raw, "spec.migrations", "migrations", MAX_MIGRATIONS)):
        field = f"spec.migrations[{index}]"
        item = _mapping(item, field)
        name = _unique_name(item, field, [m.name for m in migrations], "migration")
        if item.get("template") is None:
            raise SpecError(f"{field}.template", "is required: the Job (a JobTemplateSpec) that migrates")
        backoff = item.get("backoffLimit")
        if backoff is not None and (
            not isinstance(backoff, int) or isinstance(backoff, bool) or not 0 <= backoff <= MAX_BACKOFF_LIMIT
        ):
            raise SpecError(
                f"{field}.backoffLimit", f"must be an integer 0..{MAX_BACKOFF_LIMIT}, not {backoff!r}"
            )
        timeout = item.get("timeout")
        timeout_value = (
            None if timeout is None else _positive_duration(timeout, f"{field}.timeout", timedelta(0))
        )
        rollback = item.get("rollbackTemplate")
        migrations.append(
            Migration(
                name,
                _with_backoff(job_template(item["template"], f"{field}.template"), backoff),
                timeout_value,
                None
                if rollback is None
                else _with_backoff(job_template(rollback, f"{field}.rollbackTemplate"), backoff),
            )
        )
    return tuple(migrations)


def _with_backoff(template: Mapping[str, Any], backoff: int | None) -> Mapping[str, Any]:
    """spec.migrations[].backoffLimit wins over the template's own."""
    if backoff is None:
        return template
    return {**template, "spec": {**template["spec"], "backoffLimit": backoff}}


# --- notifications -----------------------------------------------------------------------------

# What a notification can be sent on: a phase entered, or one of these events (core/notifications.py).
NOTIFICATION_EVENTS = (
    *(phase.value for phase in Phase),
    reasons.NEW_REVISION,
    reasons.ANALYSIS_FAILED,
    reasons.GATE_FAILED,
    reasons.INVALID_SPEC,
    *ANNOUNCEMENTS,
)
NOTIFICATION_FORMATS = ("json", "slack")


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str
    namespace: str | None  # None: the Release's own namespace

    def describe(self, default_namespace: str) -> str:
        """How logs and Events name the Secret: never its value."""
        return f"Secret {self.namespace or default_namespace}/{self.name} key {self.key}"


@dataclass(frozen=True)
class NotificationSpec:
    """A webhook to POST to on some transitions; its URL stays in the Secret until sending."""

    url: SecretKeyRef
    format: str  # json | slack
    events: frozenset[str]
    source: str  # where it is declared, e.g. "spec.notifications[0]" or "ReleasePolicy prod-rules ..."


def parse_notifications(
    raw: Any, path: str = "spec.notifications", *, policy: str | None = None
) -> tuple[NotificationSpec, ...]:
    """A Release's notifications use Secrets of its own namespace; a policy's name the namespace."""
    parsed: list[NotificationSpec] = []
    for index, item in enumerate(_list(raw, path, "notifications")):
        field = f"{path}[{index}]"
        item = _mapping(item, field)
        if item.get("webhook") is None:
            raise SpecError(f"{field}.webhook", "is required: the webhook to send to")
        webhook = _mapping(item["webhook"], f"{field}.webhook")
        ref = _mapping(webhook.get("urlSecretRef"), f"{field}.webhook.urlSecretRef")
        name, key, namespace = ref.get("name"), ref.get("key"), ref.get("namespace")
        if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise SpecError(f"{field}.webhook.urlSecretRef.name", f"{name!r} must be the name of a Secret")
        if not isinstance(key, str) or not _is_data_key(key):
            raise SpecError(f"{field}.webhook.urlSecretRef.key", f"{key!r} must be a key of the Secret")
        if policy is None and namespace is not None:
            raise SpecError(
                f"{field}.webhook.urlSecretRef.namespace", "a Release reads Secrets of its own namespace only"
            )
        if policy is not None and (not isinstance(namespace, str) or not _DNS_LABEL.match(namespace)):
            raise SpecError(
                f"{field}.webhook.urlSecretRef.namespace", f"{namespace!r} must be the Secret's namespace"
            )
        form = webhook.get("format", "json")
        if form not in NOTIFICATION_FORMATS:
            raise SpecError(f"{field}.webhook.format", f"must be json or slack, not {form!r}")
        events = _strings(item.get("events"), f"{field}.events")
        unknown = [event for event in events if event not in NOTIFICATION_EVENTS]
        if unknown or not events:
            raise SpecError(
                f"{field}.events",
                f"must list events among {', '.join(NOTIFICATION_EVENTS)}, not {unknown or events}",
            )
        url = SecretKeyRef(name, key, namespace if policy is not None else None)
        if any(other.url == url for other in parsed):
            raise SpecError(
                f"{field}.webhook.urlSecretRef", f"{name}/{key} is already notified: merge the lists"
            )
        source = field if policy is None else f"ReleasePolicy {policy} {field}"
        parsed.append(NotificationSpec(url, str(form), frozenset(events), source))
    return tuple(parsed)
