"""The plain data the core decides on and answers with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shepherd.core.actions import Action, Event
from shepherd.core.analysis import Measurement, MeasurementRequest, QueryOutcome
from shepherd.core.gates import Approval, WebhookAnswer, WebhookCall
from shepherd.core.spec import ReleaseSpec, RevisionContent, SpecError, parse_spec
from shepherd.core.workloads import ReleaseRef


@dataclass(frozen=True)
class ReleaseObject:
    name: str
    namespace: str
    uid: str
    generation: int
    annotations: Mapping[str, str]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    # `spec` parsed already (by the shell, once per generation), or the SpecError it raised; None: not yet.
    parsed: ReleaseSpec | SpecError | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> ReleaseRef:
        return ReleaseRef(self.name, self.namespace, self.uid)

    def release_spec(self) -> ReleaseSpec:
        """The parsed spec; raises SpecError naming the first bad field."""
        if isinstance(self.parsed, SpecError):
            raise SpecError(self.parsed.field, self.parsed.message)
        return self.parsed if self.parsed is not None else parse_spec(self.spec)


@dataclass(frozen=True)
class QueryCheck:
    """Ask Prometheus whether it can parse a metric's query, before any traffic moves."""

    key: str
    metric: str
    field: str
    query: str


@dataclass(frozen=True)
class QueryCheckResult:
    check: QueryCheck
    error: str | None  # Prometheus' parse error
    unreachable: str | None = None  # why Prometheus could not be asked


@dataclass(frozen=True)
class Observations:
    deployments: Mapping[str, Mapping[str, Any]]  # live Deployments owned by the Release, by name
    revisions: Mapping[int, RevisionContent]  # recorded revisions (ControllerRevisions), by number
    measurements: tuple[Measurement, ...] = ()
    query_checks: tuple[QueryCheckResult, ...] = ()
    approvals: tuple[Approval, ...] = ()  # ReleaseApprovals in the Release's namespace
    releases: Mapping[tuple[str, str], Mapping[str, Any] | None] = field(default_factory=dict)  # dependencies
    policies: tuple[Mapping[str, Any], ...] = ()  # every ReleasePolicy
    namespace_labels: Mapping[str, str] = field(default_factory=dict)  # for their namespaceSelectors
    gate_samples: Mapping[str, QueryOutcome] = field(default_factory=dict)  # metric gates' answers, by gate
    webhooks: Mapping[str, WebhookAnswer] = field(default_factory=dict)  # webhook gates' answers, by gate
    jobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # live Jobs owned by the Release
    config_maps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # owned ConfigMaps, by name
    # Gateway API routing: the HTTPRoutes the spec names (None: not found), the Services Shepherd manages
    routes: Mapping[tuple[str, str], Mapping[str, Any] | None] = field(default_factory=dict)
    services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Needed:
    """What the shell must ask Prometheus and webhooks before calling decide."""

    measurements: tuple[MeasurementRequest, ...] = ()
    query_checks: tuple[QueryCheck, ...] = ()
    gate_queries: tuple[tuple[str, str], ...] = ()  # (metric gate, rendered query) while gating
    webhook_calls: tuple[WebhookCall, ...] = ()  # webhook gates' requests while gating
    gate_objects: bool = False  # read approvals and the Releases depended on: only while gating


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    actions: tuple[Action, ...]
    events: tuple[Event, ...]
    wake_at: datetime | None
