"""What a replica-ratio canary really gives each component: its share of the pods, not the weight asked.

A Service that selects every pod of a component spreads requests over its pods, so the canary's share of
the traffic is its share of the pods. With r replicas and a weight w the canary runs ceil(r*w/100) pods
(`spec.canary_replicas`): a weight is exact only when r*w is a multiple of 100. With 2 replicas,
`setWeight: 25` runs 1 canary pod of 2, half the pods.

`status.traffic` says what the Deployments ask for, while a canary runs:

    routing: Replicas
    desiredWeight: 25          # the weight of the step reached (status.canaryWeight); 0 with no canary
    components: [{name: web, canaryPods: 1, stablePods: 1, canaryShare: 50}]

Pods are counted from each Deployment's `spec.replicas` (what is asked for), by its `shepherd.dev/role`
label, not from `readyReplicas`: readiness is what the message and the progress deadline follow, and a
count that moved with every pod becoming ready would rewrite the status for every pod. So while a canary
is being scaled up the stable still counts its pods (capacity never drops), and the share shows it. A
component whose wave is promoted runs the new revision on its stable Deployment: canaryPods 0. The share
is a whole percent, rounded half up (1 pod of 8 is 13%).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shepherd.core.spec import ReleaseSpec, SetWeight, canary_replicas
from shepherd.core.status import Phase, Rollout
from shepherd.core.workloads import NAME_LABEL, ROLE_LABEL, live_replicas

ROUTING = "Replicas"
# The phases in which a canary revision's traffic is split (or being returned): traffic is shown in them
# even before the canary has a pod, and in any phase while a canary Deployment still asks for pods.
CANARY_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.ROLLING_BACK})


def share(canary: int, total: int) -> int:
    """The canary's percent of the pods, rounded half up; 0 without any pod."""
    return (200 * canary + total) // (2 * total) if total > 0 else 0


def replica_traffic(
    rollout: Rollout, spec: ReleaseSpec, deployments: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any] | None:
    """`status.traffic` in replica mode: present while a canary runs, None at rest (dropped from status).

    `deployments` are the live Deployments the Release owns, as decide() observes them. Components are
    listed in the spec's order, then any other one that still has a Deployment (a component the new
    revision drops keeps its stable pods until the promotion), by name. None with Gateway API routing:
    there the routes say how traffic is split (core/traffic.py).
    """
    if spec.routing is not None:
        return None
    pods: dict[str, dict[str, int]] = {c.name: {"canary": 0, "stable": 0} for c in spec.components}
    others: dict[str, dict[str, int]] = {}
    for deployment in deployments.values():
        labels = (deployment.get("metadata") or {}).get("labels") or {}
        component, role = labels.get(NAME_LABEL), labels.get(ROLE_LABEL)
        if not isinstance(component, str) or role not in ("canary", "stable"):
            continue
        counts = pods.get(component) or others.setdefault(component, {"canary": 0, "stable": 0})
        counts[role] += live_replicas(deployment)
    pods.update(sorted(others.items()))
    canary_running = any(counts["canary"] > 0 for counts in pods.values())
    if not canary_running and not (rollout.is_canary and rollout.phase in CANARY_PHASES):
        return None
    return {
        "routing": ROUTING,
        "desiredWeight": rollout.canary_weight if rollout.is_canary else 0,
        "components": [
            {
                "name": name,
                "canaryPods": counts["canary"],
                "stablePods": counts["stable"],
                "canaryShare": share(counts["canary"], counts["canary"] + counts["stable"]),
            }
            for name, counts in pods.items()
        ],
    }


@dataclass(frozen=True)
class InexactWeight:
    """A setWeight step that a component's replica count cannot represent."""

    step: int  # index in spec.strategy.canary.steps
    component: str
    weight: int
    replicas: int
    canary_pods: int
    multiple: int  # the smallest replica count that represents this weight; any multiple of it does too
    every_step: int  # the smallest replica count that represents every setWeight step of the spec

    @property
    def field(self) -> str:
        return f"spec.strategy.canary.steps[{self.step}].setWeight"

    @property
    def share(self) -> int:
        return share(self.canary_pods, self.replicas)

    def describe(self) -> str:
        fits = f" ({self.every_step} fits every step)" if self.every_step != self.multiple else ""
        return (
            f"setWeight {self.weight} with {self.replicas} replicas of component {self.component} gives the "
            f"canary {self.share}% of the pods ({self.canary_pods} of {self.replicas}); set replicas to a "
            f"multiple of {self.multiple}{fits}, or route by Gateway API"
        )


def exact_multiple(weight: int) -> int:
    """The smallest replica count r for which r * weight / 100 is a whole number of pods."""
    return 100 // math.gcd(weight, 100)


def inexact_weights(spec: ReleaseSpec) -> list[InexactWeight]:
    """Every (setWeight step, component) pair whose weight replica routing cannot give exactly: the canary
    gets ceil(r*w/100) pods, so exactly w% only when ceil(r*w/100) * 100 / r == w."""
    weights = [(index, step.weight) for index, step in enumerate(spec.steps) if isinstance(step, SetWeight)]
    every_step = math.lcm(*(exact_multiple(weight) for _, weight in weights)) if weights else 1
    found = []
    for index, weight in weights:
        for component in spec.components:
            pods = canary_replicas(component.replicas, weight)
            if pods * 100 != weight * component.replicas:
                found.append(
                    InexactWeight(
                        index,
                        component.name,
                        weight,
                        component.replicas,
                        pods,
                        exact_multiple(weight),
                        every_step,
                    )
                )
    return found
