"""The Deployments a rollout state calls for, and the safe order to get there.

Replica-ratio canary: for a component with R replicas at weight w the canary
runs ceil(R*w/100) pods and the stable the rest. Every change is applied
scale-ups first: nothing shrinks or disappears until everything that grows is
ready, so capacity never drops (canary up before stable down, stable back up
before the canary goes away).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shepherd.core.actions import Action, ApplyDeployment, DeleteDeployment
from shepherd.core.spec import (
    DEFAULT_REPLICAS,
    ReleaseSpec,
    RevisionContent,
    SetCanaryScale,
    SetHeaderRoute,
    canary_replicas,
    waves,
)
from shepherd.core.status import PROMOTED, Phase, Rollout

Role = Literal["stable", "canary"]
CANARY_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED})  # a canary takes traffic by the steps

GROUP = "shepherd.dev"
API_VERSION = f"{GROUP}/v1alpha1"
MANAGED_BY = "shepherd"
TEMPLATE_HASH_ANNOTATION = f"{GROUP}/template-hash"
ROLE_LABEL = f"{GROUP}/role"
REVISION_LABEL = f"{GROUP}/revision"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
VERSION_LABEL = "app.kubernetes.io/version"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"

# Phases in which the operator must not touch workloads: before a revision
# starts (migrations included), and after a failure with nothing to fall back to.
HOLD_PHASES = frozenset({Phase.PENDING, Phase.GATING, Phase.MIGRATING, Phase.FAILED})


@dataclass(frozen=True)
class ReleaseRef:
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class DesiredDeployment:
    component: str
    role: Role
    revision: int
    version: str
    replicas: int | None  # None: keep the live count (a component the spec no longer lists)
    template: Mapping[str, Any] | None  # None: keep the live template (its revision record is gone)

    def name(self, release: str) -> str:
        return deployment_name(release, self.component, self.role)


@dataclass(frozen=True)
class WorkloadPlan:
    actions: tuple[Action, ...]
    converged: bool  # every desired Deployment matches and is ready, and nothing extra is left
    failure: str | None  # a Deployment that reports it cannot make progress
    waiting_on: tuple[str, ...]  # human-readable: what is not ready yet
    settled: bool = False  # every desired Deployment matches and is ready (extra ones may remain)


def deployment_name(release: str, component: str, role: Role) -> str:
    return f"{release}-{component}" + ("-canary" if role == "canary" else "")


def selector_labels(release: str, component: str, role: Role) -> dict[str, str]:
    return {NAME_LABEL: component, INSTANCE_LABEL: release, ROLE_LABEL: role}


def desired_deployments(
    rollout: Rollout, spec: ReleaseSpec, current: RevisionContent, stable: RevisionContent | None
) -> list[DesiredDeployment] | None:
    """What should run for this state; None means hold everything as it is.

    With spec.components[].dependsOn the components move in waves: the waves before `rollout.wave`
    run the new revision on stable, the current wave runs the canary, later waves stay as they are;
    a rollback returns the current wave first, then the one before, down to the first.
    """
    if rollout.phase in HOLD_PHASES:
        return None
    listed = {c.name: c.replicas for c in spec.components}
    # A recorded revision may hold a component the spec no longer lists: it runs as many pods as the
    # CRD's default.
    replicas = {name: listed.get(name, DEFAULT_REPLICAS) for name in current.templates}
    if rollout.phase is Phase.ROLLED_BACK:
        return _only_stable(rollout, stable, listed)
    order = waves(spec, current.templates)
    promoted = {name for wave in order[: rollout.wave] for name in wave}
    if rollout.phase is Phase.ROLLING_BACK:
        # Waves go back in reverse: a component returns only once those depending on it have.
        return [
            DesiredDeployment(name, "stable", rollout.revision, current.version, replicas[name], template)
            for name, template in current.templates.items()
            if name in promoted
        ] + _only_stable(rollout, stable, listed, promoted)
    moving = set(order[rollout.wave]) if rollout.wave < len(order) else set()
    # Promoted, or back on the stable revision: every component runs this revision on stable.
    whole = rollout.phase in PROMOTED or rollout.phase is Phase.SUCCEEDED
    if whole or (rollout.has_stable and not rollout.is_canary):
        promoted, moving = set(current.templates), set()
    if not rollout.is_canary:
        # The first revision is deployed wave after wave, each ready before the next.
        return [
            DesiredDeployment(name, "stable", rollout.revision, current.version, replicas[name], template)
            for name, template in current.templates.items()
            if name in promoted | moving
        ]
    routed = {ref.component for ref in spec.routing.routes} if spec.routing else set()
    return _canary_split(rollout, spec, current, stable, replicas, listed, promoted, moving, routed)


def _only_stable(
    rollout: Rollout,
    stable: RevisionContent | None,
    replicas: Mapping[str, int],
    still_new: Collection[str] = (),
) -> list[DesiredDeployment]:
    if stable is None:
        return []
    return [
        DesiredDeployment(
            name, "stable", rollout.stable_revision, rollout.stable_version, replicas.get(name), template
        )
        for name, template in stable.templates.items()
        if name not in still_new
    ]


def _canary_split(
    rollout: Rollout,
    spec: ReleaseSpec,
    current: RevisionContent,
    stable: RevisionContent | None,
    replicas: Mapping[str, int],
    listed: Mapping[str, int],
    promoted: set[str],
    moving: set[str],
    routed: set[str],
) -> list[DesiredDeployment]:
    """Promoted components run the new template on stable; moving ones split by weight (or, routed by
    Gateway API, run a canary of its own scale beside a fully scaled stable); the rest wait."""
    desired: list[DesiredDeployment] = []
    stable_templates = stable.templates if stable is not None else {}
    fully_promoted = promoted >= set(current.templates)
    for name, template in current.templates.items():
        total = replicas[name]
        if name in promoted:
            desired.append(
                DesiredDeployment(name, "stable", rollout.revision, current.version, total, template)
            )
            continue
        canary = 0
        if name in moving:
            canary = (
                routed_canary_scale(spec, rollout, total)
                if name in routed
                else canary_replicas(total, rollout.canary_weight)
            )
        if canary > 0:
            desired.append(
                DesiredDeployment(name, "canary", rollout.revision, current.version, canary, template)
            )
        if name in stable_templates or stable is None:
            desired.append(
                DesiredDeployment(
                    name,
                    "stable",
                    rollout.stable_revision,
                    rollout.stable_version,
                    total if name in routed else total - canary,
                    stable_templates.get(name),
                )
            )
    if fully_promoted:
        return desired  # components the new revision drops go with its promotion
    for name, template in stable_templates.items():
        if name not in current.templates:
            desired.append(
                DesiredDeployment(
                    name,
                    "stable",
                    rollout.stable_revision,
                    rollout.stable_version,
                    listed.get(name),
                    template,
                )
            )
    return desired


def routed_canary_scale(spec: ReleaseSpec, rollout: Rollout, total: int) -> int:
    """The canary's replicas with Gateway API routing: the last setCanaryScale so far, else the weight's
    (and at least one pod while a header route sends it requests)."""
    scale = SetCanaryScale()
    for step in spec.steps[: rollout.current_step + 1]:
        if isinstance(step, SetCanaryScale):
            scale = step
    if scale.replicas is not None:
        return scale.replicas
    if scale.weight is not None:
        return canary_replicas(total, scale.weight)
    matched = canary_replicas(total, rollout.canary_weight)
    return max(matched, 1) if header_routes(spec, rollout) else matched


def header_routes(spec: ReleaseSpec, rollout: Rollout) -> tuple[SetHeaderRoute, ...]:
    """The header routes in force: set by the steps so far, while a canary takes traffic; none otherwise."""
    if not (rollout.is_canary and rollout.phase in CANARY_PHASES):
        return ()
    active: dict[str, SetHeaderRoute] = {}
    for step in spec.steps[: rollout.current_step + 1]:
        if isinstance(step, SetHeaderRoute):
            if step.matches:
                active[step.name] = step
            else:
                active.pop(step.name, None)
    return tuple(active.values())


def owner_reference(release: ReleaseRef) -> dict[str, Any]:
    """The Release controls what it owns: garbage-collected with it, invisible to GitOps diffs."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Release",
        "name": release.name,
        "uid": release.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def render_deployment(
    release: ReleaseRef,
    desired: DesiredDeployment,
    replicas: int,
    template: Mapping[str, Any],
    progress_deadline_seconds: int,
) -> dict[str, Any]:
    """The full Deployment manifest; the template hash annotation says what it runs."""
    name = desired.name(release.name)
    selector = selector_labels(release.name, desired.component, desired.role)
    labels = {
        **selector,
        VERSION_LABEL: desired.version,
        REVISION_LABEL: str(desired.revision),
        MANAGED_BY_LABEL: MANAGED_BY,
    }
    pod_template = copy.deepcopy(dict(template))
    pod_metadata = dict(pod_template.get("metadata") or {})
    pod_metadata["labels"] = {**(pod_metadata.get("labels") or {}), **labels}
    pod_template["metadata"] = pod_metadata
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": release.namespace,
            "labels": labels,
            "annotations": {TEMPLATE_HASH_ANNOTATION: template_hash(pod_template)},
            "ownerReferences": [owner_reference(release)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": pod_template,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "progressDeadlineSeconds": progress_deadline_seconds,
            "revisionHistoryLimit": 2,
        },
    }


def template_hash(pod_template: Mapping[str, Any]) -> str:
    canonical = json.dumps(pod_template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def live_replicas(deployment: Mapping[str, Any]) -> int:
    value = (deployment.get("spec") or {}).get("replicas", 1)
    return value if isinstance(value, int) else 1


def readiness(deployment: Mapping[str, Any]) -> tuple[bool, str]:
    """Ready as the deployment controller reports it: current generation, all pods updated and available."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    wanted = live_replicas(deployment)
    generation = meta.get("generation") or 0
    if (status.get("observedGeneration") or 0) < generation:
        return False, "rollout not yet observed"
    updated = status.get("updatedReplicas") or 0
    available = min(status.get("availableReplicas") or 0, status.get("readyReplicas") or 0)
    total = status.get("replicas") or 0
    if updated < wanted or available < wanted or total > wanted:
        return False, f"{available}/{wanted} ready"
    return True, f"{wanted}/{wanted} ready"


def reported_failure(deployment: Mapping[str, Any]) -> str | None:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return str(condition.get("message") or "ProgressDeadlineExceeded")
    return None


def plan_workloads(
    release: ReleaseRef,
    desired: list[DesiredDeployment] | None,
    live: Mapping[str, Mapping[str, Any]],
    progress_deadline_seconds: int,
) -> WorkloadPlan:
    """Diff desired against live Deployments: scale-ups and template changes first, then the rest."""
    if desired is None:
        return WorkloadPlan((), True, None, (), settled=True)
    ups: list[Action] = []
    downs: list[Action] = []
    waiting: list[str] = []
    failure: str | None = None
    wanted_names = set()
    for want in desired:
        name = want.name(release.name)
        wanted_names.add(name)
        current = live.get(name)
        template = want.template if want.template is not None else _live_template(current)
        if template is None:
            continue  # neither a record nor a live Deployment to keep: nothing can be built
        if current is None:
            if want.replicas is None:
                continue
            manifest = render_deployment(release, want, want.replicas, template, progress_deadline_seconds)
            ups.append(ApplyDeployment(manifest, exists=False))
            waiting.append(f"{name} to be created")
            continue
        have = live_replicas(current)
        target = want.replicas if want.replicas is not None else have
        manifest = render_deployment(release, want, max(target, have), template, progress_deadline_seconds)
        changed = _annotation(current, TEMPLATE_HASH_ANNOTATION) != _annotation(
            manifest, TEMPLATE_HASH_ANNOTATION
        )
        live_labels = (current.get("metadata") or {}).get("labels") or {}
        labels_changed = any(live_labels.get(k) != v for k, v in manifest["metadata"]["labels"].items())
        if changed or labels_changed or target > have:
            ups.append(ApplyDeployment(manifest, exists=True))
            waiting.append(f"{name} to roll out")
            continue
        ready, detail = readiness(current)
        if not ready:
            waiting.append(f"{name} {detail}")
            failure = failure or _named_failure(name, current)
        if target < have:
            scaled = render_deployment(release, want, target, template, progress_deadline_seconds)
            downs.append(ApplyDeployment(scaled, exists=True))
    downs.extend(DeleteDeployment(name) for name in sorted(set(live) - wanted_names))
    if ups or waiting:
        return WorkloadPlan(tuple(ups), False, failure, tuple(waiting))
    return WorkloadPlan(tuple(downs), not downs, None, tuple(_describe(downs)), settled=True)


def _named_failure(name: str, deployment: Mapping[str, Any]) -> str | None:
    reported = reported_failure(deployment)
    return f"Deployment {name}: {reported}" if reported else None


def _describe(downs: Iterable[Action]) -> Iterable[str]:
    for action in downs:
        if isinstance(action, DeleteDeployment):
            yield f"{action.name} to be removed"
        elif isinstance(action, ApplyDeployment):
            yield f"{action.name} to scale down"


def _annotation(obj: Mapping[str, Any], key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    return str(value) if value is not None else None


def _live_template(deployment: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if deployment is None:
        return None
    template = (deployment.get("spec") or {}).get("template")
    if not isinstance(template, Mapping):
        return None
    metadata = dict(template.get("metadata") or {})
    labels = {
        k: v
        for k, v in (metadata.get("labels") or {}).items()
        if k not in (NAME_LABEL, INSTANCE_LABEL, VERSION_LABEL, ROLE_LABEL, REVISION_LABEL, MANAGED_BY_LABEL)
    }
    return {**template, "metadata": {**metadata, "labels": labels}}
