"""Drive the pure core through time: apply its actions to plain dicts, as the shell would.

Deployments become ready at the next reconcile unless listed in `unready`, or their
pods name a ConfigMap that does not exist (the kubelet's CreateContainerConfigError); a
`crashing` one reports ProgressDeadlineExceeded like the deployment controller does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shepherd.core import Decision, Observations, ReleaseObject, decide
from shepherd.core.actions import (
    ApplyConfigMap,
    ApplyDeployment,
    CreateJob,
    DeleteConfigMap,
    DeleteDeployment,
    DeleteJob,
    DeleteRevision,
    Event,
    RecordRevision,
    RemoveAnnotations,
)
from shepherd.core.analysis import Measurement, MeasurementRequest, QueryOutcome
from shepherd.core.config import referenced_config_maps
from shepherd.core.evidence import needed
from shepherd.core.gates import Approval, WebhookAnswer, WebhookCall
from shepherd.core.model import QueryCheckResult
from shepherd.core.spec import RevisionContent

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def container(image: str) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "app", "image": image}]}}


def release_spec(version: str = "1.0.0", **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "version": version,
        "components": [
            {"name": "api", "replicas": 4, "template": container(f"shop/api:{version}")},
            {"name": "web", "replicas": 2, "template": container(f"shop/web:{version}")},
        ],
        "strategy": {
            "canary": {
                "steps": [
                    {"setWeight": 25},
                    {"pause": {"duration": "1m"}},
                    {"setWeight": 50},
                    {"pause": {}},
                    {"setWeight": 75},
                ]
            }
        },
        "postRelease": {"bake": "5m"},
    }
    spec.update(overrides)
    return spec


@dataclass
class World:
    spec: dict[str, Any]
    name: str = "shop"
    namespace: str = "prod"
    now: datetime = T0
    generation: int = 1
    annotations: dict[str, str] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    revisions: dict[int, RevisionContent] = field(default_factory=dict)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  # the ControllerRevisions, whole
    config_maps: dict[str, dict[str, Any]] = field(default_factory=dict)  # the namespace's, anyone's
    unready: set[str] = field(default_factory=set)
    crashing: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    # Prometheus, answering per (metric, role, component): a value, or a whole QueryOutcome.
    prometheus: Callable[[str, str, str | None], float | QueryOutcome | None] | None = None
    prometheus_down: bool = False
    parse_errors: dict[str, str] = field(default_factory=dict)  # metric name -> Prometheus' parse error
    queries: list[MeasurementRequest] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    others: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # other Releases, by key
    policies: list[dict[str, Any]] = field(default_factory=list)  # ReleasePolicy objects
    namespace_labels: dict[str, str] = field(default_factory=dict)
    # Webhook gates' endpoints, by gate: what they answer; every call made is kept in `calls`.
    webhooks: dict[str, WebhookAnswer] = field(default_factory=dict)
    calls: list[WebhookCall] = field(default_factory=list)
    # Jobs the Release owns, and how the job controller finishes them: "succeed", "fail" or "running".
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_outcomes: dict[str, str] = field(default_factory=dict)  # by Job name; unlisted Jobs keep running
    # Faults: called with each write's number in a pass (0 is the status write); True makes it fail, and
    # the pass stops there, as the shell's does on an error.
    fails: Callable[[int], bool] | None = None

    def set_spec(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.generation += 1

    def release(self) -> ReleaseObject:
        return ReleaseObject(
            name=self.name,
            namespace=self.namespace,
            uid="uid-1",
            generation=self.generation,
            annotations=dict(self.annotations),
            spec=copy.deepcopy(self.spec),
            status=copy.deepcopy(self.status),
        )

    def reconcile(self) -> Decision:
        self._kubelet()
        release = self.release()
        asked = needed(release, self.now)
        measurements = tuple(self._measure(request) for request in asked.measurements)
        checks = tuple(
            QueryCheckResult(
                check,
                self.parse_errors.get(check.metric),
                "connection refused" if self.prometheus_down else None,
            )
            for check in asked.query_checks
        )
        observed = Observations(
            self.deployments,
            self.revisions,
            measurements,
            checks,
            tuple(self.approvals),
            dict(self.others),
            tuple(self.policies),
            dict(self.namespace_labels),
            {name: self._answer(name, "gate", None, query) for name, query in asked.gate_queries},
            {call.gate: self._call(call) for call in asked.webhook_calls},
            copy.deepcopy(self.jobs),
            config_maps=self.config_maps,
        )
        decision = decide(release, observed, self.now)
        self.decisions.append(decision)
        # As the shell does: the status first (the intent, and the commands' acknowledgements), then the
        # actions in order. `fails(n)` says whether the n-th write of this pass fails (0: the status).
        if self.fails is not None and self.fails(0):
            return decision
        self.status = decision.status
        self.events.extend(decision.events)
        for number, action in enumerate(decision.actions, start=1):
            if self.fails is not None and self.fails(number):
                break
            self._apply(action)
        return decision

    def settle(self, max_rounds: int = 50) -> Decision:
        """Reconcile until a decision changes nothing and asks for nothing."""
        decision = self.reconcile()
        for _ in range(max_rounds):
            before = copy.deepcopy(self.status)
            decision = self.reconcile()
            if not decision.actions and decision.status == before:
                return decision
        raise AssertionError(f"did not settle: {self.status.get('phase')} {self.status.get('message')}")

    def advance(self, delta: timedelta) -> Decision:
        self.now += delta
        return self.settle()

    def run_until(self, phase: str, step: timedelta = timedelta(seconds=30), limit: int = 200) -> Decision:
        decision = self.settle()
        for _ in range(limit):
            if self.status.get("phase") == phase:
                return decision
            wake = decision.wake_at
            self.now = min(wake, self.now + step) if wake and wake > self.now else self.now + step
            decision = self.settle()
        raise AssertionError(
            f"never reached {phase}: {self.status.get('phase')} {self.status.get('message')}"
        )

    @property
    def phase(self) -> str:
        return str(self.status.get("phase"))

    def replicas(self, name: str) -> int | None:
        deployment = self.deployments.get(name)
        return None if deployment is None else int(deployment["spec"]["replicas"])

    def ready_replicas(self, name: str) -> int:
        """Pods serving now: a Deployment's status lags its spec until the kubelet's next pass."""
        deployment = self.deployments.get(name)
        if deployment is None:
            return 0
        return min(int(deployment["status"].get("readyReplicas") or 0), int(deployment["spec"]["replicas"]))

    def image(self, name: str) -> str:
        return str(self.deployments[name]["spec"]["template"]["spec"]["containers"][0]["image"])

    def revision_of(self, name: str) -> int | None:
        """The revision a Deployment's pods run (its shepherd.dev/revision label), None if it is absent."""
        deployment = self.deployments.get(name)
        if deployment is None:
            return None
        return int(deployment["spec"]["template"]["metadata"]["labels"]["shepherd.dev/revision"])

    def condition(self, kind: str) -> Mapping[str, Any] | None:
        return next((c for c in self.status.get("conditions", []) if c["type"] == kind), None)

    def _measure(self, request: MeasurementRequest) -> Measurement:
        self.queries.append(request)
        outcomes = {
            role: self._answer(request.metric, role, request.component, query)
            for role, query in request.queries.items()
        }
        return Measurement(request, outcomes, self.now)

    def _answer(self, metric: str, role: str, component: str | None, query: str) -> QueryOutcome:
        if self.prometheus_down or self.prometheus is None:
            return QueryOutcome("error", message="connection refused", query=query)
        answer = self.prometheus(metric, role, component)
        if isinstance(answer, QueryOutcome):
            return replace(answer, query=query)
        if answer is None:
            return QueryOutcome("empty", query=query)
        return QueryOutcome("value", float(answer), query=query)

    def _call(self, call: WebhookCall) -> WebhookAnswer:
        self.calls.append(call)
        return self.webhooks.get(call.gate, WebhookAnswer(None, error="cannot connect: Connection refused"))

    def _apply(self, action: object) -> None:
        if isinstance(action, ApplyDeployment):
            manifest = copy.deepcopy(dict(action.manifest))
            old = self.deployments.get(action.name)
            generation = 1 if old is None else old["metadata"]["generation"]
            if old is not None and old["spec"] != manifest["spec"]:
                generation += 1
            manifest["metadata"]["generation"] = generation
            manifest["status"] = old.get("status", {}) if old else {}
            self.deployments[action.name] = manifest
        elif isinstance(action, DeleteDeployment):
            self.deployments.pop(action.name, None)
        elif isinstance(action, ApplyConfigMap):
            self.config_maps.setdefault(action.name, copy.deepcopy(dict(action.manifest)))
        elif isinstance(action, DeleteConfigMap):
            self.config_maps.pop(action.name, None)
        elif isinstance(action, RecordRevision):
            self.records[int(action.manifest["revision"])] = copy.deepcopy(dict(action.manifest))
            self.revisions[int(action.manifest["revision"])] = RevisionContent.from_dict(
                action.manifest["data"]
            )
        elif isinstance(action, DeleteRevision):
            number = int(action.name.rsplit("-", 1)[1])
            self.revisions.pop(number, None)
        elif isinstance(action, CreateJob):
            self.jobs.setdefault(action.name, {**copy.deepcopy(dict(action.manifest)), "status": {}})
        elif isinstance(action, DeleteJob):
            self.jobs.pop(action.name, None)
        elif isinstance(action, RemoveAnnotations):
            for key in action.keys:
                if key not in action.values or self.annotations.get(key) == action.values[key]:
                    self.annotations.pop(key, None)

    def _kubelet(self) -> None:
        for name, job in self.jobs.items():
            outcome = self.job_outcomes.get(name)
            if outcome == "succeed":
                job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
            elif outcome == "fail":
                failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                job["status"] = {"failed": 1, "conditions": [failed]}
            else:
                job["status"] = {"active": 1}
        for name, deployment in self.deployments.items():
            replicas = deployment["spec"]["replicas"]
            missing = referenced_config_maps(deployment["spec"]["template"], required_only=True) - set(
                self.config_maps
            )
            healthy = name not in self.unready and name not in self.crashing and not missing
            ready = replicas if healthy else 0
            status: dict[str, Any] = {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
            }
            if name in self.crashing:
                status["conditions"] = [
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ]
            deployment["status"] = status


PROMOTE, ABORT, RETRY = "shepherd.dev/promote", "shepherd.dev/abort", "shepherd.dev/retry"
ROLLBACK = "shepherd.dev/rollback"


def ordered_spec(version: str = "1.0.0", **overrides: Any) -> dict[str, Any]:
    """release_spec with two waves: the frontend (listed first) depends on the backend."""
    spec = release_spec(version, **overrides)
    spec["components"] = [
        {
            "name": "frontend",
            "replicas": 2,
            "template": container(f"shop/frontend:{version}"),
            "dependsOn": ["backend"],
        },
        {"name": "backend", "replicas": 4, "template": container(f"shop/backend:{version}")},
    ]
    return spec


def succeeded(spec: dict[str, Any] | None = None) -> World:
    """A Release whose first revision has been rolled out and baked."""
    world = World(spec or release_spec("1.0.0"))
    world.run_until("Succeeded")
    return world


def canary_at(weight: int, world: World | None = None, version: str = "1.1.0") -> World:
    """Roll out `version` until the canary reaches `weight`, promoting past indefinite pauses."""
    world = world or succeeded()
    world.set_spec(release_spec(version, **{k: v for k, v in world.spec.items() if k == "rollback"}))
    for _ in range(20):
        world.settle()
        if world.status["canaryWeight"] >= weight:
            return world
        if world.status["reason"] == "CanaryPauseStep":
            world.annotations[PROMOTE] = "true"
        world.advance(timedelta(minutes=1))
    raise AssertionError(f"canary never reached {weight}%: {world.status['message']}")
