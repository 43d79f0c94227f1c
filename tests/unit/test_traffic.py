"""Gateway API routing: the weights and header rules a rollout asks of a route, and whether it is live."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from shepherd.core.spec import HeaderMatch, RouteRef, SetHeaderRoute, parse_spec
from shepherd.core.status import Phase, Rollout
from shepherd.core.traffic import (
    RouteProblem,
    check_route,
    missing_services,
    route_change,
    target_weight,
)
from shepherd.core.workloads import ReleaseRef, header_routes, routed_canary_scale

RELEASE = ReleaseRef("shop", "prod", "uid-shop")
STABLE, CANARY = "shop-api-stable", "shop-api-canary"
REF = RouteRef("shop", None, "api")
KEY = ("prod", "shop")
USER_RULE = {
    "name": "admin",
    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
    "filters": [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "y"}]}}
    ],
    "backendRefs": [{"name": "admin", "port": 80}],
}
BETA = SetHeaderRoute("beta", (HeaderMatch("X-Beta", "Exact", "1"),))


def route(stable: int = 100, canary: int = 0, *rules: dict[str, Any], generation: int = 3) -> dict[str, Any]:
    split = {
        "name": "main",
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "filters": [
            {
                "type": "ResponseHeaderModifier",
                "responseHeaderModifier": {"add": [{"name": "a", "value": "b"}]},
            }
        ],
        "backendRefs": [
            {"name": STABLE, "port": 80, "weight": stable},
            {"name": CANARY, "port": 80, "weight": canary},
        ],
    }
    return {
        "metadata": {"name": "shop", "namespace": "prod", "generation": generation, "resourceVersion": "7"},
        "spec": {
            "hostnames": ["shop.example"],
            "parentRefs": [{"name": "edge"}],
            "rules": [USER_RULE, split, *rules],
        },
        "status": {"parents": [parent("edge", generation)]},
    }


def parent(name: str, generation: int, accepted: str = "True", resolved: str = "True") -> dict[str, Any]:
    return {
        "parentRef": {"name": name},
        "controllerName": "example.com/gateway",
        "conditions": [
            {"type": "Accepted", "status": accepted, "reason": "Accepted", "observedGeneration": generation},
            {
                "type": "ResolvedRefs",
                "status": resolved,
                "reason": "ResolvedRefs",
                "observedGeneration": generation,
            },
        ],
    }


def changed(
    live: dict[str, Any], target: int | None, headers: tuple[SetHeaderRoute, ...] = (), scale: int = 100
) -> dict[str, Any]:
    change = route_change(live, REF, KEY, "prod", STABLE, CANARY, target, headers, scale)
    assert change is not None
    return jsonpatch.apply_patch(copy.deepcopy(live), list(change.ops))


def test_a_step_sets_the_two_weights_and_nothing_else() -> None:
    live = route()
    after = changed(live, 25)

    assert after["spec"]["rules"][1]["backendRefs"] == [
        {"name": STABLE, "port": 80, "weight": 75},
        {"name": CANARY, "port": 80, "weight": 25},
    ]
    untouched = copy.deepcopy(live)
    untouched["spec"]["rules"][1]["backendRefs"] = after["spec"]["rules"][1]["backendRefs"]
    assert after == untouched, "the user's rule, filters, matches, hostnames and parents are as they were"


def test_weights_on_a_finer_scale_are_exact() -> None:
    after = changed(route(1000, 0), 5, scale=1000)
    assert [b["weight"] for b in after["spec"]["rules"][1]["backendRefs"]] == [950, 50]


def test_a_route_already_at_the_weight_needs_no_write() -> None:
    assert route_change(route(75, 25), REF, KEY, "prod", STABLE, CANARY, 25, (), 100) is None


def test_weight_to_the_canary_is_a_raise_and_weight_back_to_stable_is_not() -> None:
    up = route_change(route(), REF, KEY, "prod", STABLE, CANARY, 50, (), 100)
    down = route_change(route(50, 50), REF, KEY, "prod", STABLE, CANARY, 0, (), 100)
    assert up is not None and up.raises
    assert down is not None and not down.raises


def test_a_header_route_is_one_rule_sending_matching_requests_to_the_canary_only() -> None:
    after = changed(route(90, 10), 10, (BETA,))
    injected = after["spec"]["rules"][2]

    assert injected["name"].startswith("shepherd-beta-")
    assert injected["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"type": "Exact", "name": "X-Beta", "value": "1"}],
        }
    ]
    assert injected["backendRefs"] == [{"name": CANARY, "port": 80, "weight": 1}]
    assert injected["filters"] == route()["spec"]["rules"][1]["filters"], "the rule's own filters apply too"
    assert route_change(after, REF, KEY, "prod", STABLE, CANARY, 10, (BETA,), 100) is None, "never duplicated"


def test_an_abort_returns_all_weight_and_removes_header_rules_in_one_patch() -> None:
    live = changed(route(50, 50), 50, (BETA,))
    change = route_change(live, REF, KEY, "prod", STABLE, CANARY, 0, (), 100)
    assert change is not None
    after = jsonpatch.apply_patch(copy.deepcopy(live), list(change.ops))

    assert after == route(100, 0)
    assert not change.raises


def test_only_the_named_rules_are_targeted() -> None:
    second = copy.deepcopy(route()["spec"]["rules"][1]) | {"name": "checkout"}
    live = route(100, 0, second)
    only = RouteRef("shop", None, "api", ("checkout",))
    change = route_change(live, only, KEY, "prod", STABLE, CANARY, 20, (), 100)
    assert change is not None
    after = jsonpatch.apply_patch(copy.deepcopy(live), list(change.ops))

    assert [b["weight"] for b in after["spec"]["rules"][1]["backendRefs"]] == [100, 0]
    assert [b["weight"] for b in after["spec"]["rules"][2]["backendRefs"]] == [80, 20]


def test_a_route_without_both_services_is_a_problem_named() -> None:
    live = route()
    live["spec"]["rules"][1]["backendRefs"].pop()
    with pytest.raises(
        RouteProblem, match="no rule has backendRefs to both Services shop-api-stable and shop-api-canary"
    ):
        route_change(live, REF, KEY, "prod", STABLE, CANARY, 10, (), 100)
    with pytest.raises(RouteProblem, match="has no rule named nope"):
        route_change(
            route(), RouteRef("shop", None, "api", ("nope",)), KEY, "prod", STABLE, CANARY, 10, (), 100
        )


def test_a_header_rule_that_would_pass_sixteen_rules_is_refused() -> None:
    filler = [copy.deepcopy(USER_RULE) | {"name": f"user-{i}"} for i in range(14)]
    with pytest.raises(RouteProblem, match="past the limit of 16"):
        route_change(route(100, 0, *filler), REF, KEY, "prod", STABLE, CANARY, 10, (BETA,), 100)


def test_a_route_is_live_once_every_parent_accepted_this_generation() -> None:
    assert check_route(KEY, route(), "prod", STABLE, CANARY).verified

    behind = route()
    behind["metadata"]["generation"] = 4
    assert "generation 4 is not yet seen by edge" in check_route(KEY, behind, "prod", STABLE, CANARY).message

    rejected = route()
    rejected["status"]["parents"] = [parent("edge", 3, accepted="False")]
    rejected["status"]["parents"][0]["conditions"][0]["message"] = (
        "listener http does not allow this namespace"
    )
    check = check_route(KEY, rejected, "prod", STABLE, CANARY)
    assert not check.verified and "not Accepted by edge: listener http does not allow" in check.message

    unseen = route()
    unseen["status"] = {}
    assert (
        "not yet seen by the controller of edge" in check_route(KEY, unseen, "prod", STABLE, CANARY).message
    )
    assert check_route(KEY, None, "prod", STABLE, CANARY).message == "HTTPRoute prod/shop not found"


def test_the_applied_weight_is_read_from_the_route() -> None:
    assert check_route(KEY, route(75, 25), "prod", STABLE, CANARY).weight == 25


def rollout(phase: Phase, step: int = 0, weight: int = 0) -> Rollout:
    status = {
        "phase": phase.value,
        "revision": 2,
        "stableRevision": 1,
        "currentStep": step,
        "canaryWeight": weight,
    }
    return Rollout.from_status(status)


def test_the_weight_follows_the_phase() -> None:
    assert target_weight(rollout(Phase.PROGRESSING, weight=30), settled=False) == 30
    assert target_weight(rollout(Phase.PROMOTING, weight=100), settled=False) is None, (
        "stable takes the template first"
    )
    assert target_weight(rollout(Phase.PROMOTING, weight=100), settled=True) == 0
    assert target_weight(rollout(Phase.ROLLING_BACK, weight=30), settled=False) == 0


def spec_with(steps: list[dict[str, Any]]) -> Any:
    container = {"name": "api", "image": "shop:2", "ports": [{"name": "http", "containerPort": 8080}]}
    return parse_spec(
        {
            "version": "2",
            "components": [{"name": "api", "replicas": 4, "template": {"spec": {"containers": [container]}}}],
            "strategy": {"canary": {"trafficRouting": {"gatewayAPI": {"httpRoute": "shop"}}, "steps": steps}},
        }
    )


def test_header_routes_hold_from_their_step_while_the_canary_takes_traffic() -> None:
    spec = spec_with(
        [
            {
                "setHeaderRoute": {
                    "name": "beta",
                    "match": [{"headerName": "X-Beta", "headerValue": {"prefix": "yes"}}],
                }
            },
            {"setWeight": 10},
            {"setHeaderRoute": {"name": "beta"}},
            {"pause": {}},
        ]
    )
    (beta,) = header_routes(spec, rollout(Phase.PROGRESSING, step=1))
    assert beta.matches == (HeaderMatch("X-Beta", "RegularExpression", "^yes.*"),)
    assert routed_canary_scale(spec, rollout(Phase.PROGRESSING, step=0), 4) == 1, "a pod for the header route"
    assert header_routes(spec, rollout(Phase.PAUSED, step=3)) == (), "removed by its own step"
    assert routed_canary_scale(spec, rollout(Phase.PAUSED, step=3), 4) == 0
    assert header_routes(spec, rollout(Phase.ROLLING_BACK, step=1)) == ()


def test_managed_services_select_each_role_with_the_containers_ports() -> None:
    spec = spec_with([{"setWeight": 10}])
    assert spec.routing is not None
    canary, stable = missing_services(RELEASE, spec, spec.routing, {})  # by name

    assert (canary["metadata"]["name"], stable["metadata"]["name"]) == (CANARY, STABLE)
    assert stable["spec"]["selector"]["shepherd.dev/role"] == "stable"
    assert stable["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]
    assert stable["metadata"]["ownerReferences"][0]["uid"] == "uid-shop"
    assert missing_services(RELEASE, spec, spec.routing, {STABLE: stable, CANARY: canary}) == []
