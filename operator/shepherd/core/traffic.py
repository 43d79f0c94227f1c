"""Traffic by Gateway API: what each HTTPRoute should say for a rollout state, and whether it is live.

A route is the user's (or their GitOps tool's): Shepherd changes only the weights of the two backendRefs
of a component's stable and canary Services, in the rules it targets, and adds or removes its own
header-route rules (named `shepherd-...`). Every change to one route is one JSON patch whose first
operation tests the resourceVersion read, so a concurrent edit is a conflict, never overwritten.

A step counts as applied only once every parent of the route has accepted it (Accepted and ResolvedRefs
True, observedGeneration at least the route's generation). Weight goes to the canary only once its
Deployment is ready; it leaves the canary (an abort, a rollback, a promotion) before anything is scaled down.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shepherd.core.actions import Action, ApplyService, PatchRoute
from shepherd.core.spec import (
    INJECTED_RULE_PREFIX,
    Component,
    GatewayRouting,
    ReleaseSpec,
    RouteRef,
    SetHeaderRoute,
)
from shepherd.core.status import Phase, Rollout
from shepherd.core.workloads import (
    CANARY_PHASES,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ReleaseRef,
    WorkloadPlan,
    deployment_name,
    header_routes,
    owner_reference,
    selector_labels,
)

MAX_RULES = 16
MAX_MATCHES = 128

RouteKey = tuple[str, str]  # namespace, name


def route_key(ref: RouteRef, namespace: str) -> RouteKey:
    return ref.namespace or namespace, ref.name


def target_weight(rollout: Rollout, settled: bool) -> int | None:
    """The canary's weight in percent for this state; None: leave the routes as they are.

    While promoting, the stable Deployment takes the new template first, with the weights as the last
    step left them; only then does all traffic go to stable, before the canary is removed."""
    if rollout.is_canary and rollout.phase in CANARY_PHASES:
        return rollout.canary_weight
    if rollout.phase is Phase.PROMOTING:
        return 0 if settled else None
    return 0


@dataclass(frozen=True)
class RouteCheck:
    """One route as observed: its canary weight (percent of its targeted rules), and whether it is live."""

    namespace: str
    name: str
    weight: int | None
    verified: bool
    message: str
    generation: int = 0
    parents: tuple[Mapping[str, Any], ...] = ()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "weight": self.weight,
            "verified": self.verified,
            "generation": self.generation,
            "parents": list(self.parents),
            **({"message": self.message} if self.message else {}),
        }


@dataclass(frozen=True)
class RouteChange:
    ops: tuple[dict[str, Any], ...]  # JSON patch operations after the resourceVersion test
    raises: bool  # gives the canary more weight (or new header rules): only once it is ready


@dataclass(frozen=True)
class TrafficPlan:
    plan: WorkloadPlan
    status: dict[str, Any] = field(default_factory=dict)
    routes: tuple[RouteKey, ...] = ()  # the routes whose changes concern this Release


def plan_traffic(
    plan: WorkloadPlan,
    release: ReleaseRef,
    rollout: Rollout,
    spec: ReleaseSpec,
    routes: Mapping[RouteKey, Mapping[str, Any] | None],
    services: Mapping[str, Mapping[str, Any]],
    deployments: Mapping[str, Mapping[str, Any]],
) -> TrafficPlan:
    """The workload plan with the routes' changes in their place, held until every route is live."""
    routing = spec.routing
    if routing is None:
        return TrafficPlan(plan)
    settled = plan.settled
    target = target_weight(rollout, settled)
    headers = header_routes(spec, rollout)
    first: list[Action] = []  # weight leaving the canary: before anything is scaled down
    last: list[Action] = []  # weight reaching the canary: once the workloads are ready
    waiting: list[str] = []
    checks: list[RouteCheck] = []
    for service in missing_services(release, spec, routing, services):
        first.append(ApplyService(service))
        waiting.append(f"Service {service['metadata']['name']} to be created")
    for ref in routing.routes:
        key = route_key(ref, release.namespace)
        route = routes.get(key)
        stable, canary = routing.service_names(release.name, ref.component)
        check = check_route(key, route, release.namespace, stable, canary)
        checks.append(check)
        if route is None:
            waiting.append(check.message)
            continue
        try:
            change = route_change(
                route, ref, key, release.namespace, stable, canary, target, headers, routing.weight_scale
            )
        except RouteProblem as problem:
            waiting.append(f"HTTPRoute {key[0]}/{key[1]}: {problem}")
            continue
        if change is None:
            if not check.verified:
                waiting.append(f"HTTPRoute {key[0]}/{key[1]} {check.message}")
            continue
        ready = canary_ready(deployments, release.name, ref.component)
        if change.raises and not (settled and ready):
            waiting.append(f"HTTPRoute {key[0]}/{key[1]} to send the canary its weight once it is ready")
            continue
        patch = PatchRoute(key[0], key[1], str(route["metadata"].get("resourceVersion", "")), change.ops)
        (last if change.raises else first).append(patch)
        waiting.append(f"HTTPRoute {key[0]}/{key[1]} to be updated")
    held = replace(
        plan,
        actions=(*first, *plan.actions, *last),
        converged=plan.converged and not waiting,
        waiting_on=(*plan.waiting_on, *waiting),
    )
    weights = [c.weight for c in checks if c.weight is not None]
    status = {
        "routing": "GatewayAPI",
        "desiredWeight": target if target is not None else (min(weights) if weights else 0),
        "appliedWeight": min(weights) if weights else None,
        "verified": all(c.verified for c in checks),
        "routes": [c.status() for c in checks],
    }
    keys = tuple(route_key(ref, release.namespace) for ref in routing.routes)
    return TrafficPlan(held, status, keys)


def canary_ready(deployments: Mapping[str, Mapping[str, Any]], release: str, component: str) -> bool:
    canary = deployments.get(deployment_name(release, component, "canary")) or {}
    return int((canary.get("status") or {}).get("readyReplicas") or 0) > 0


class RouteProblem(Exception):
    """A route Shepherd cannot set as asked (no rule sends to both Services, no room for a header rule)."""


def route_change(
    route: Mapping[str, Any],
    ref: RouteRef,
    key: RouteKey,
    services_in: str,
    stable: str,
    canary: str,
    target: int | None,
    headers: Sequence[SetHeaderRoute],
    scale: int,
) -> RouteChange | None:
    """The operations that bring the route to `target` percent and exactly `headers`; None: as it is."""
    rules: list[Mapping[str, Any]] = list((route.get("spec") or {}).get("rules") or [])
    backends = Backends(key[0], services_in)
    targeted = targeted_rules(rules, ref, backends, stable, canary)
    ops: list[dict[str, Any]] = []
    raises = False
    if target is not None:
        wanted = {canary: round(target * scale / 100)}
        wanted[stable] = scale - wanted[canary]
        for index in targeted:
            for position, backend in enumerate(rules[index].get("backendRefs") or []):
                name = backends.service(backend)
                if name in wanted and backend.get("weight", 1) != wanted[name]:
                    if name == canary and wanted[name] > backend.get("weight", 1):
                        raises = True
                    path = f"/spec/rules/{index}/backendRefs/{position}/weight"
                    ops.append({"op": "add", "path": path, "value": wanted[name]})
    present = {str(r.get("name")): i for i, r in enumerate(rules) if _injected(r)}
    desired = injected_rules(rules, targeted, headers, canary, backends)
    for name in sorted(set(present) - set(desired), key=present.__getitem__, reverse=True):
        ops.append({"op": "remove", "path": f"/spec/rules/{present[name]}"})
    added = [rule for name, rule in desired.items() if name not in present]
    kept = len(rules) - len(set(present) - set(desired))
    if kept + len(added) > MAX_RULES:
        raise RouteProblem(
            f"has {kept} rules; the header routes need {len(added)} more, past the limit of {MAX_RULES}"
        )
    matches = sum(len(r.get("matches") or [{}]) for r in rules) + sum(len(r["matches"]) for r in added)
    if matches > MAX_MATCHES:
        raise RouteProblem(f"the header routes would make {matches} matches, past the limit of {MAX_MATCHES}")
    for rule in added:
        ops.append({"op": "add", "path": "/spec/rules/-", "value": rule})
        raises = True
    return RouteChange(tuple(ops), raises) if ops else None


def targeted_rules(
    rules: Sequence[Mapping[str, Any]], ref: RouteRef, backends: Backends, stable: str, canary: str
) -> list[int]:
    """Indexes of the rules whose weights Shepherd sets: named ones, else all sending to both Services."""
    both = [
        index
        for index, rule in enumerate(rules)
        if not _injected(rule)
        and {stable, canary} <= {backends.service(b) for b in rule.get("backendRefs") or []}
    ]
    if ref.rules:
        names = {str(rules[i].get("name")): i for i in range(len(rules))}
        for name in ref.rules:
            if name not in names:
                raise RouteProblem(f"has no rule named {name}")
            if names[name] not in both:
                raise RouteProblem(f"rule {name} has no backendRefs to both Services {stable} and {canary}")
        return [names[name] for name in ref.rules]
    if not both:
        raise RouteProblem(f"no rule has backendRefs to both Services {stable} and {canary}")
    return both


def injected_rules(
    rules: Sequence[Mapping[str, Any]],
    targeted: Sequence[int],
    headers: Sequence[SetHeaderRoute],
    canary: str,
    backends: Backends,
) -> dict[str, dict[str, Any]]:
    """Per header route and targeted rule: its matches with the headers added, sending to the canary only.
    The name carries a hash of the content, so a rule of that name is this rule."""
    made: dict[str, dict[str, Any]] = {}
    for header in headers:
        wanted = [{"type": m.type, "name": m.name, "value": m.value} for m in header.matches]
        for index in targeted:
            rule = rules[index]
            matches = [
                {**match, "headers": [*(match.get("headers") or []), *wanted]}
                for match in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
            ]
            backend = next(b for b in rule.get("backendRefs") or [] if backends.service(b) == canary)
            injected: dict[str, Any] = {"matches": matches, "backendRefs": [{**backend, "weight": 1}]}
            if rule.get("filters"):
                injected["filters"] = rule["filters"]
            digest = hashlib.sha256(json.dumps(injected, sort_keys=True).encode()).hexdigest()[:10]
            name = f"{INJECTED_RULE_PREFIX}{header.name}-{digest}"
            made[name] = {"name": name, **injected}
    return made


def check_route(
    key: RouteKey, route: Mapping[str, Any] | None, services_in: str, stable: str, canary: str
) -> RouteCheck:
    """The canary's weight as the route holds it, and whether every parent has accepted this generation."""
    namespace, name = key
    if route is None:
        return RouteCheck(namespace, name, None, False, f"HTTPRoute {namespace}/{name} not found")
    meta = route.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    weight = applied_weight(route, Backends(namespace, services_in), stable, canary)
    parents = [_parent(ref, namespace) for ref in (route.get("spec") or {}).get("parentRefs") or []]
    statuses = (route.get("status") or {}).get("parents") or []
    reported: list[dict[str, Any]] = []
    problems: list[str] = []
    if not parents:
        problems.append("has no parentRefs: no gateway serves it")
    for parent in parents:
        entries = [s for s in statuses if _parent(s.get("parentRef") or {}, namespace) == parent]
        if not entries:
            problems.append(f"is not yet seen by the controller of {parent[3]}")
        for entry in entries:
            conditions = {c.get("type"): c for c in entry.get("conditions") or []}
            reported.append(
                {
                    "name": parent[3],
                    "controllerName": entry.get("controllerName", ""),
                    "conditions": [
                        {k: c[k] for k in ("type", "status", "reason", "observedGeneration") if k in c}
                        for c in conditions.values()
                    ],
                }
            )
            for kind in ("Accepted", "ResolvedRefs"):
                condition = conditions.get(kind) or {}
                if condition.get("status") != "True":
                    why = condition.get("message") or condition.get("reason") or "not reported"
                    problems.append(f"is not {kind} by {parent[3]}: {why}")
                elif int(condition.get("observedGeneration") or 0) < generation:
                    problems.append(f"generation {generation} is not yet seen by {parent[3]}")
    message = "; ".join(dict.fromkeys(problems))
    return RouteCheck(namespace, name, weight, not problems, message, generation, tuple(reported))


def applied_weight(route: Mapping[str, Any], backends: Backends, stable: str, canary: str) -> int | None:
    """The canary's share in percent, the lowest over the rules sending to both Services."""
    shares = []
    for rule in (route.get("spec") or {}).get("rules") or []:
        if _injected(rule):
            continue
        weights = {backends.service(b): int(b.get("weight", 1)) for b in rule.get("backendRefs") or []}
        if stable in weights and canary in weights:
            total = weights[stable] + weights[canary]
            shares.append(round(100 * weights[canary] / total) if total else 0)
    return min(shares) if shares else None


def missing_services(
    release: ReleaseRef, spec: ReleaseSpec, routing: GatewayRouting, live: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The stable and canary Services Shepherd manages for the routed components, not yet created."""
    made = []
    for component in {ref.component for ref in routing.routes}:
        found = spec.component(component)
        if found is None or not routing.managed(component):
            continue
        for role, name in zip(
            ("stable", "canary"), routing.service_names(release.name, component), strict=True
        ):
            if name not in live:
                made.append(service_manifest(release, found, role, name))
    return sorted(made, key=lambda s: str(s["metadata"]["name"]))


def service_manifest(release: ReleaseRef, component: Component, role: str, name: str) -> dict[str, Any]:
    """A Service for the component's pods of one role, with the ports its containers declare."""
    ports = []
    for container in (component.template.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            entry = {
                "name": port.get("name") or f"port-{number}",
                "port": number,
                "targetPort": number,
                "protocol": port.get("protocol", "TCP"),
            }
            ports.append(entry)
    if not ports:
        ports = [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]
    labels = {**selector_labels(release.name, component.name, role), MANAGED_BY_LABEL: MANAGED_BY}  # type: ignore[arg-type]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": release.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(release)],
        },
        "spec": {
            "selector": selector_labels(release.name, component.name, role),  # type: ignore[arg-type]
            "ports": ports,
        },
    }


@dataclass(frozen=True)
class Backends:
    """How a route in `route_namespace` names the Services of a Release in `services_in`."""

    route_namespace: str
    services_in: str

    def service(self, backend: Mapping[str, Any]) -> str | None:
        """The name of the Release-namespace Service a backendRef points at; None for anything else."""
        if backend.get("group", "") not in ("", "core") or backend.get("kind", "Service") != "Service":
            return None
        if backend.get("namespace", self.route_namespace) != self.services_in:
            return None
        return str(backend.get("name"))


def _injected(rule: Mapping[str, Any]) -> bool:
    return str(rule.get("name") or "").startswith(INJECTED_RULE_PREFIX)


def _parent(ref: Mapping[str, Any], namespace: str) -> tuple[str, str, str, str, str, str]:
    return (
        str(ref.get("group", "gateway.networking.k8s.io")),
        str(ref.get("kind", "Gateway")),
        str(ref.get("namespace", namespace)),
        str(ref.get("name", "")),
        str(ref.get("sectionName", "")),
        str(ref.get("port", "")),
    )
