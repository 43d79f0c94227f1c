"""The real share of pods a replica-ratio canary gives each component (status.traffic), and the setWeight
steps a component's replica count cannot represent (what `shepherd lint` warns about)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simulation import release_spec

from shepherd.core.replica_traffic import exact_multiple, inexact_weights, replica_traffic, share
from shepherd.core.spec import GatewayRouting, RouteRef, canary_replicas, content_of, parse_spec
from shepherd.core.status import Phase, Rollout
from shepherd.core.workloads import ReleaseRef, desired_deployments, render_deployment

REF = ReleaseRef("shop", "prod", "uid-1")
SPEC = parse_spec(release_spec("1.1.0"))  # api: 4 replicas, web: 2
CURRENT = content_of(SPEC)
STABLE = content_of(parse_spec(release_spec("1.0.0")))


def rollout(phase: Phase, weight: int, revision: int = 2) -> Rollout:
    return Rollout(phase=phase, revision=revision, stable_revision=1, canary_weight=weight)


def deployments_for(state: Rollout) -> dict:
    """The Deployments the rollout state asks for, as the API server would hold them."""
    desired = desired_deployments(state, SPEC, CURRENT, STABLE) or []
    return {d.name("shop"): render_deployment(REF, d, d.replicas, d.template, 600) for d in desired}


def components(traffic: dict | None) -> dict[str, tuple[int, int, int]]:
    assert traffic is not None
    return {c["name"]: (c["canaryPods"], c["stablePods"], c["canaryShare"]) for c in traffic["components"]}


# --- the share ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "total", "percent"),
    [
        (1, 2, 50),
        (1, 4, 25),
        (1, 3, 33),
        (2, 3, 67),
        (1, 8, 13),
        (3, 8, 38),
        (1, 200, 1),
        (0, 4, 0),
        (0, 0, 0),
    ],
)
def test_the_share_is_a_whole_percent_rounded_half_up(canary: int, total: int, percent: int) -> None:
    assert share(canary, total) == percent


@given(st.integers(min_value=1, max_value=1000), st.integers(min_value=0, max_value=100))
def test_a_weight_is_given_exactly_when_the_replicas_are_a_multiple_of_its_exact_multiple(
    replicas: int, weight: int
) -> None:
    pods = canary_replicas(replicas, weight)
    exact = pods * 100 / replicas == weight
    assert exact == (replicas % exact_multiple(weight) == 0)
    if exact:
        assert share(pods, replicas) == weight
    assert pods >= 1 if weight > 0 else pods == 0


# --- status.traffic from the rollout and the Deployments ----------------------------------------


def test_each_component_shows_its_real_share_of_pods_and_the_weight_asked() -> None:
    state = rollout(Phase.PROGRESSING, 25)
    traffic = replica_traffic(state, SPEC, deployments_for(state))
    assert traffic is not None
    assert traffic["routing"] == "Replicas" and traffic["desiredWeight"] == 25
    assert [c["name"] for c in traffic["components"]] == ["api", "web"], "the spec's order"
    assert components(traffic) == {"api": (1, 3, 25), "web": (1, 1, 50)}


def test_a_weight_every_component_represents_shows_that_weight() -> None:
    state = rollout(Phase.PAUSED, 50)
    assert components(replica_traffic(state, SPEC, deployments_for(state))) == {
        "api": (2, 2, 50),
        "web": (1, 1, 50),
    }


def test_pods_are_counted_from_what_each_deployment_asks_for() -> None:
    """Mid scale-up the stable keeps its pods until the canary is ready: 1 canary pod of 5 is 20%."""
    state = rollout(Phase.PROGRESSING, 25)
    live = deployments_for(state)
    live["shop-api"]["spec"]["replicas"] = 4
    live["shop-api-canary"]["status"] = {"readyReplicas": 0}
    assert components(replica_traffic(state, SPEC, live))["api"] == (1, 4, 20)


def test_at_rest_there_is_no_traffic_status() -> None:
    settled = Rollout(phase=Phase.SUCCEEDED, revision=2, stable_revision=2, canary_weight=100)
    assert replica_traffic(settled, SPEC, deployments_for(settled)) is None
    first = Rollout(phase=Phase.PROGRESSING, revision=1)
    assert replica_traffic(first, SPEC, deployments_for(first)) is None, "a first revision has no canary"
    baking = rollout(Phase.BAKING, 100)
    assert replica_traffic(baking, SPEC, deployments_for(baking)) is None, "promoted: no canary left"
    gating = rollout(Phase.GATING, 0)
    assert replica_traffic(gating, SPEC, deployments_for(rollout(Phase.SUCCEEDED, 0, revision=1))) is None


def test_with_gateway_api_routing_the_pods_do_not_say_how_traffic_is_split() -> None:
    routed = replace(SPEC, routing=GatewayRouting(routes=(RouteRef("shop", None, "api"),), services={}))
    state = rollout(Phase.PROGRESSING, 25)
    assert replica_traffic(state, routed, deployments_for(state)) is None


def test_a_canary_phase_before_its_first_weight_shows_no_canary_pods() -> None:
    state = rollout(Phase.PROGRESSING, 0)
    traffic = replica_traffic(state, SPEC, deployments_for(state))
    assert traffic is not None and traffic["desiredWeight"] == 0
    assert components(traffic) == {"api": (0, 4, 0), "web": (0, 2, 0)}


def test_canary_pods_still_running_show_in_any_phase_with_no_weight_asked_unless_it_is_the_canarys() -> None:
    """A Failed canary held for a person keeps its weight; a superseding revision still gating has asked
    for none yet, while the old canary still serves."""
    running = deployments_for(rollout(Phase.PROGRESSING, 25))
    held = replica_traffic(rollout(Phase.FAILED, 25), SPEC, running)
    assert held is not None and held["desiredWeight"] == 25
    superseding = replica_traffic(rollout(Phase.GATING, 0, revision=3), SPEC, running)
    assert superseding is not None and superseding["desiredWeight"] == 0
    assert components(superseding)["api"] == (1, 3, 25)
    back_to_stable = Rollout(phase=Phase.PROGRESSING, revision=1, stable_revision=1, canary_weight=25)
    returning = replica_traffic(back_to_stable, SPEC, running)
    assert returning is not None and returning["desiredWeight"] == 0


def test_a_component_the_spec_no_longer_lists_comes_after_the_listed_ones() -> None:
    state = rollout(Phase.PROGRESSING, 25)
    live = deployments_for(state)
    for name in ("worker", "cron"):
        extra = copy.deepcopy(live["shop-web"])
        extra["metadata"]["labels"]["app.kubernetes.io/name"] = name
        extra["spec"]["replicas"] = 3
        live[f"shop-{name}"] = extra
    live["unlabelled"] = {"metadata": {"labels": {}}, "spec": {"replicas": 5}}
    traffic = replica_traffic(state, SPEC, live)
    assert traffic is not None
    assert [c["name"] for c in traffic["components"]] == ["api", "web", "cron", "worker"]
    assert components(traffic)["worker"] == (0, 3, 0)


# --- what lint warns about -----------------------------------------------------------------------


def test_weights_a_replica_count_cannot_represent_are_found_per_step_and_component() -> None:
    spec = parse_spec(release_spec("1.0.0"))  # 25, 50, 75 over api: 4 and web: 2
    found = inexact_weights(spec)
    assert [(w.field, w.component, w.weight, w.canary_pods, w.share) for w in found] == [
        ("spec.strategy.canary.steps[0].setWeight", "web", 25, 1, 50),
        ("spec.strategy.canary.steps[4].setWeight", "web", 75, 2, 100),
    ]
    assert found[0].describe() == (
        "setWeight 25 with 2 replicas of component web gives the canary 50% of the pods (1 of 2); "
        "set replicas to a multiple of 4, or route by Gateway API"
    )


def test_the_advice_names_the_replica_count_that_fits_every_step_when_it_differs() -> None:
    raw = release_spec("1.0.0")
    raw["components"] = [{"name": "api", "replicas": 3, "template": raw["components"][0]["template"]}]
    raw["strategy"]["canary"]["steps"] = [{"setWeight": 10}, {"setWeight": 25}, {"setWeight": 100}]
    found = inexact_weights(parse_spec(raw))
    assert [(w.weight, w.canary_pods, w.share, w.multiple, w.every_step) for w in found] == [
        (10, 1, 33, 10, 20),
        (25, 1, 33, 4, 20),
    ]
    assert "set replicas to a multiple of 10 (20 fits every step)" in found[0].describe()


def test_weights_every_replica_count_represents_are_not_reported() -> None:
    raw = release_spec("1.0.0")
    raw["strategy"]["canary"]["steps"] = [
        {"setWeight": 0},
        {"setWeight": 50},
        {"pause": {}},
        {"setWeight": 100},
    ]
    assert inexact_weights(parse_spec(raw)) == []
