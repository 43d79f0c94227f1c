"""Stories: a canary routed by a Gateway API HTTPRoute on the real API server, with the Gateway API CRDs of
the pinned module (their own validation judges every route Shepherd writes).

No gateway data plane runs here: `RouteStatusWriter` acts as the gateway's controller, writing the route's
status (Accepted, ResolvedRefs, observedGeneration) for each generation it sees, or refusing it when told to.
So these stories prove what Shepherd writes and when, not how real requests split.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.gatewayapi import RouteStatusWriter, rejected
from story import Story, quickstart_release

GROUP, VERSION, ROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
STABLE, CANARY = "shop-api-stable", "shop-api-canary"
ADMIN_RULE = {
    "name": "admin",
    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
    "filters": [
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "X-Admin", "value": "1"}]},
        }
    ],
    "backendRefs": [{"name": "admin", "port": 80}],
}


def user_route(namespace: str) -> dict[str, Any]:
    """The route as its owner wrote it: a rule of their own, and the split Shepherd sets the weights of."""
    split = {
        "name": "main",
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [
            {"name": STABLE, "port": 8080, "weight": 100},
            {"name": CANARY, "port": 8080, "weight": 0},
        ],
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": namespace, "labels": {"team": "shop"}},
        "spec": {
            "hostnames": ["shop.example"],
            "parentRefs": [{"name": "edge"}],
            "rules": [ADMIN_RULE, split],
        },
    }


class GatewayController:
    """The gateway's controller for the story's route: accepts each generation, or refuses it."""

    def __init__(self, writer: RouteStatusWriter, namespace: str) -> None:
        self.writer, self.namespace = writer, namespace

    def refuse(self, message: str) -> None:
        self.writer.set_policy(self.namespace, "shop", rejected("NotAllowedByListeners", message))

    def accept(self) -> None:
        self.writer.set_policy(self.namespace, "shop", None)


@pytest.fixture
def gateway(story: Story, control_plane: ControlPlane) -> Iterator[GatewayController]:
    story.custom.create_namespaced_custom_object(
        GROUP, VERSION, story.namespace, ROUTES, user_route(story.namespace)
    )
    # The user's own backend: a gateway resolves every backendRef of the route, not only Shepherd's.
    admin = {"metadata": {"name": "admin"}, "spec": {"ports": [{"port": 80}], "selector": {"app": "admin"}}}
    story.core.create_namespaced_service(story.namespace, admin)
    with RouteStatusWriter(control_plane.kubeconfig, namespace=story.namespace) as writer:
        yield GatewayController(writer, story.namespace)


def routed(version: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    release = quickstart_release(version)
    release["spec"]["strategy"]["canary"] = {
        "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "shop", "component": "api"}]}},
        "steps": steps,
    }
    return release


def route(story: Story) -> dict[str, Any]:
    return dict(story.custom.get_namespaced_custom_object(GROUP, VERSION, story.namespace, ROUTES, "shop"))


def weights(story: Story) -> list[int]:
    return [b["weight"] for b in route(story)["spec"]["rules"][1]["backendRefs"]]


def without_weights(spec: dict[str, Any]) -> dict[str, Any]:
    """The route's spec with the split's weights left out: what must never change."""
    copied = copy.deepcopy(spec)
    for rule in copied["rules"]:
        for backend in rule.get("backendRefs") or []:
            if backend["name"] in (STABLE, CANARY):
                backend.pop("weight", None)
    return copied


def test_weights_follow_the_steps_and_nothing_else_in_the_route_changes(
    story: Story, gateway: GatewayController
) -> None:
    story.apply(routed("1.0.0", [{"setWeight": 100}]))
    story.wait_phase("Succeeded", revision=1)
    before = route(story)
    assert weights(story) == [100, 0], "at rest: stable takes all"
    services = {s.metadata.name for s in story.core.list_namespaced_service(story.namespace).items}
    assert {STABLE, CANARY} <= services, "Shepherd made the Services the route sends to"

    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
    story.apply(routed("1.1.0", steps))
    first = story.wait("the first pause", lambda s: s.get("phase") == "Paused" and s.get("currentStep") == 1)
    assert weights(story) == [80, 20]
    assert first["traffic"]["appliedWeight"] == 20 and first["traffic"]["verified"] is True
    assert story.replicas()["shop-api"] == 4, "the stable stays fully scaled"
    assert story.replicas()["shop-api-canary"] == 1, "the canary's pods match its weight: ceil(4 * 20%)"

    story.kubectl("release", "promote", "shop")
    story.wait("the second pause", lambda s: s.get("phase") == "Paused" and s.get("currentStep") == 3)
    assert weights(story) == [40, 60]
    story.kubectl("release", "promote", "shop")
    story.wait_phase("Succeeded", revision=2)

    after = route(story)
    assert weights(story) == [100, 0], "promoted: all traffic back on stable, which runs the new version"
    assert without_weights(after["spec"]) == without_weights(before["spec"]), "only weights ever changed"
    assert after["metadata"]["labels"] == {"team": "shop"}
    assert "shop-api-canary" not in story.replicas()


def test_a_route_the_gateway_does_not_accept_holds_the_step(story: Story, gateway: GatewayController) -> None:
    story.apply(routed("1.0.0", [{"setWeight": 100}]))
    story.wait_phase("Succeeded", revision=1)
    gateway.refuse("listener http does not allow routes from this namespace")
    story.apply(routed("1.1.0", [{"setWeight": 30}, {"pause": {}}]))

    held = story.wait(
        "the step held on the route", lambda s: "not Accepted by edge" in (s.get("message") or "")
    )
    assert held["currentStep"] == 0 and held["traffic"]["verified"] is False
    assert "listener http does not allow routes from this namespace" in held["message"]

    gateway.accept()
    story.wait("the pause", lambda s: s.get("phase") == "Paused" and s.get("currentStep") == 1)
    assert weights(story) == [70, 30]


def test_a_header_route_is_injected_then_an_abort_returns_the_route_in_one_write(
    story: Story, gateway: GatewayController
) -> None:
    story.apply(routed("1.0.0", [{"setWeight": 100}]))
    story.wait_phase("Succeeded", revision=1)
    original = route(story)["spec"]
    beta = {"name": "beta", "match": [{"headerName": "X-Beta", "headerValue": {"exact": "yes"}}]}
    story.apply(routed("1.1.0", [{"setHeaderRoute": beta}, {"setWeight": 10}, {"pause": {}}]))
    story.wait("the pause", lambda s: s.get("phase") == "Paused" and s.get("currentStep") == 2)

    live = route(story)
    injected = [r for r in live["spec"]["rules"] if r.get("name", "").startswith("shepherd-beta-")]
    assert len(injected) == 1, "one header rule, never duplicated"
    assert injected[0]["matches"][0]["headers"] == [{"type": "Exact", "name": "X-Beta", "value": "yes"}]
    assert [b["name"] for b in injected[0]["backendRefs"]] == [CANARY]
    generation = live["metadata"]["generation"]

    story.kubectl("release", "abort", "shop")
    story.wait_phase("RolledBack", revision=2)
    back = route(story)
    assert back["spec"] == original, "the route is exactly as its owner wrote it"
    assert back["metadata"]["generation"] == generation + 1, "weights and header rule went in one write"
    assert "shop-api-canary" not in story.replicas()


def test_an_operator_killed_mid_step_leaves_no_duplicated_rule(
    story: Story, gateway: GatewayController
) -> None:
    story.apply(routed("1.0.0", [{"setWeight": 100}]))
    story.wait_phase("Succeeded", revision=1)
    beta = {"name": "beta", "match": [{"headerName": "X-Beta", "headerValue": {"exact": "yes"}}]}
    story.apply(routed("1.1.0", [{"setHeaderRoute": beta}, {"setWeight": 10}, {"pause": {}}]))
    story.wait_until(
        "the header rule",
        lambda: any(r.get("name", "").startswith("shepherd-") for r in route(story)["spec"]["rules"]),
    )

    story.operator.kill()  # SIGKILL right after the route's write, whatever comes next
    story.operator.start()
    story.wait("the pause", lambda s: s.get("phase") == "Paused" and s.get("currentStep") == 2)

    names = [r.get("name", "") for r in route(story)["spec"]["rules"]]
    assert len([n for n in names if n.startswith("shepherd-beta-")]) == 1, names
    assert weights(story) == [90, 10]
