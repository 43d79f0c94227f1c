"""The lab's stand-in gateway controller on the real API server: it writes HTTPRoute status through the
status subresource, as the CRD's schema allows, accepting, rejecting or lagging on demand, and, following
every route, answering each new generation by the policy a test sets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import kubernetes
import pytest

from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.gatewayapi import (
    CONTROLLER_NAME,
    GROUP,
    HOLD,
    PLURAL,
    VERSION,
    RouteStatusWriter,
    entries_of,
    rejected,
)

TIMEOUT = 30.0


def http_route(name: str, canary_weight: int, parents: tuple[str, ...] = ("edge",)) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": parent} for parent in parents],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "shop-stable", "port": 80, "weight": 100 - canary_weight},
                        {"name": "shop-canary", "port": 80, "weight": canary_weight},
                    ]
                }
            ],
        },
    }


def service(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}


def conditions(route: Mapping[str, Any], controller: str = CONTROLLER_NAME) -> dict[tuple[str, str], Any]:
    """(parent name, condition type) -> (status, reason, observedGeneration) of controller's entries."""
    return {
        (entry["parentRef"]["name"], c["type"]): (c["status"], c["reason"], c["observedGeneration"])
        for entry in entries_of(route, controller)
        for c in entry["conditions"]
    }


class Routes:
    def __init__(self, admin: kubernetes.client.ApiClient, namespace: str) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(admin)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name))

    def set_canary_weight(self, name: str, weight: int) -> int:
        """Change the weights (a new generation); returns the generation."""
        route = self.get(name)
        backends = route["spec"]["rules"][0]["backendRefs"]
        backends[0]["weight"], backends[1]["weight"] = 100 - weight, weight
        answer = self.custom.replace_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, route
        )
        return int(answer["metadata"]["generation"])

    def wait(self, what: str, name: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        route = self.get(name)
        while not check(route):
            assert time.monotonic() < deadline, f"timed out waiting for {what}; status: {route.get('status')}"
            time.sleep(0.05)
            route = self.get(name)
        return route


@pytest.fixture
def routes(admin: kubernetes.client.ApiClient, namespace: str) -> Routes:
    return Routes(admin, namespace)


@pytest.fixture
def writer(control_plane: ControlPlane) -> Iterator[RouteStatusWriter]:
    """On demand only: not started, so it follows nothing."""
    on_demand = RouteStatusWriter(control_plane.kubeconfig)
    yield on_demand
    on_demand.stop()


def test_on_demand_accept_reject_and_lag_keep_other_controllers_entries(
    control_plane: ControlPlane,
    admin: kubernetes.client.ApiClient,
    namespace: str,
    routes: Routes,
    writer: RouteStatusWriter,
) -> None:
    core = kubernetes.client.CoreV1Api(admin)
    core.create_namespaced_service(namespace, service("shop-stable"))
    routes.create(http_route("shop", 20, parents=("edge", "internal")))

    # Another gateway's entry is left alone by every write of this one.
    other = RouteStatusWriter(control_plane.kubeconfig, controller_name="example.com/other-gateway")
    other.accept(namespace, "shop")
    other.stop()

    # The canary's Service does not exist yet: accepted, but its references are not resolved.
    route = writer.accept(namespace, "shop")
    assert conditions(route) == {
        ("edge", "Accepted"): ("True", "Accepted", 1),
        ("edge", "ResolvedRefs"): ("False", "BackendNotFound", 1),
        ("internal", "Accepted"): ("True", "Accepted", 1),
        ("internal", "ResolvedRefs"): ("False", "BackendNotFound", 1),
    }
    assert "shop-canary" in entries_of(route)[0]["conditions"][1]["message"]

    core.create_namespaced_service(namespace, service("shop-canary"))
    route = writer.accept(namespace, "shop")
    assert set(conditions(route).values()) == {("True", "Accepted", 1), ("True", "ResolvedRefs", 1)}
    assert [e["parentRef"] for e in entries_of(route)] == [
        {"group": GROUP, "kind": "Gateway", "name": "edge"},
        {"group": GROUP, "kind": "Gateway", "name": "internal"},
    ]
    assert len(entries_of(route, "example.com/other-gateway")) == 2

    # The spec moves to generation 2; the gateway says it saw only generation 1.
    assert routes.set_canary_weight("shop", 50) == 2
    route = writer.lag(namespace, "shop", 1)
    assert route["metadata"]["generation"] == 2
    assert {observed for _, _, observed in conditions(route).values()} == {1}

    route = writer.reject(namespace, "shop", "NotAllowedByListeners", "no listener allows this namespace")
    assert conditions(route)[("edge", "Accepted")] == ("False", "NotAllowedByListeners", 2)
    assert conditions(route)[("internal", "ResolvedRefs")] == ("True", "ResolvedRefs", 2)
    assert entries_of(route)[0]["conditions"][0]["message"] == "no listener allows this namespace"

    # What was written is what the API server keeps, other gateway's entries included.
    stored = routes.get("shop")
    assert stored["status"] == route["status"]
    assert len(stored["status"]["parents"]) == 4

    writer.clear(namespace, "shop")
    assert [e["controllerName"] for e in routes.get("shop")["status"]["parents"]] == [
        "example.com/other-gateway"
    ] * 2


def test_following_every_route_answers_each_generation_by_its_policy(
    control_plane: ControlPlane, admin: kubernetes.client.ApiClient, namespace: str, routes: Routes
) -> None:
    core = kubernetes.client.CoreV1Api(admin)
    for name in ("shop-stable", "shop-canary"):
        core.create_namespaced_service(namespace, service(name))

    def live_at(generation: int) -> Callable[[dict[str, Any]], bool]:
        return lambda route: (
            set(conditions(route).values())
            == {
                ("True", "Accepted", generation),
                ("True", "ResolvedRefs", generation),
            }
        )

    with RouteStatusWriter(control_plane.kubeconfig, namespace=namespace) as gateway:
        routes.create(http_route("shop", 0))
        routes.create(http_route("other", 0))
        routes.wait("shop accepted at generation 1", "shop", live_at(1))
        assert routes.set_canary_weight("shop", 10) == 2
        routes.wait("shop accepted at generation 2", "shop", live_at(2))

        # Held: a new generation is not answered. The route changed first is answered first, so once
        # the other route's later change is answered, the held one's was seen and left alone.
        gateway.set_policy(namespace, "shop", HOLD)
        assert routes.set_canary_weight("shop", 20) == 3
        assert routes.set_canary_weight("other", 20) == 2
        routes.wait("other accepted at generation 2", "other", live_at(2))
        assert set(conditions(routes.get("shop")).values()) == {
            ("True", "Accepted", 2),
            ("True", "ResolvedRefs", 2),
        }

        gateway.set_policy(namespace, "shop", rejected("NoMatchingParent", "no Gateway edge"))
        route = routes.wait(
            "shop rejected at generation 3",
            "shop",
            lambda r: conditions(r).get(("edge", "Accepted")) == ("False", "NoMatchingParent", 3),
        )
        assert entries_of(route)[0]["conditions"][0]["message"] == "no Gateway edge"

        gateway.set_policy(namespace, "shop", None)
        routes.wait("shop accepted again at generation 3", "shop", live_at(3))

        # A backend that goes away is noticed without a new generation, as a gateway follows Services.
        core.delete_namespaced_service("shop-canary", namespace)
        for name, generation in (("shop", 3), ("other", 2)):
            routes.wait(
                f"{name}'s canary unresolved",
                name,
                lambda r, g=generation: (
                    conditions(r).get(("edge", "ResolvedRefs")) == ("False", "BackendNotFound", g)
                ),
            )
    # Stopped, it has recorded every write it made: one per answer, none repeated, each route's in the
    # order of its generations.
    writes = [
        (w.name, *w.conditions["Accepted"][1:], *w.conditions["ResolvedRefs"][1:]) for w in gateway.writes
    ]
    assert [w for w in writes if w[0] == "shop"] == [
        ("shop", "Accepted", 1, "ResolvedRefs", 1),
        ("shop", "Accepted", 2, "ResolvedRefs", 2),
        ("shop", "NoMatchingParent", 3, "ResolvedRefs", 3),
        ("shop", "Accepted", 3, "ResolvedRefs", 3),
        ("shop", "Accepted", 3, "BackendNotFound", 3),
    ], writes
    assert [w for w in writes if w[0] == "other"] == [
        ("other", "Accepted", 1, "ResolvedRefs", 1),
        ("other", "Accepted", 2, "ResolvedRefs", 2),
        ("other", "Accepted", 2, "BackendNotFound", 2),
    ], writes
