"""Stories: real HTTP requests through a real Gateway API implementation. Traefik v3 (`make
gateway-binaries`) follows the real API server, writes the HTTPRoute's status itself and splits requests by
the route's weights between two Services, whose ready pods (played by the pod simulator, put in
EndpointSlices by the real endpointslice controller) answer through the lab's stand-in kube-proxy.

`make test` builds the Traefik binary (once per pinned version). Without it these stories fail in CI and
are skipped elsewhere, saying why and how to build it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import kubernetes

from shepherd.lab.gateway import CONTROLLER_NAME, ServiceProxy, Traefik, within_binomial
from shepherd.lab.podsim import PodSimulator

GROUP, VERSION, ROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
HOST = "shop.example"
TIMEOUT = 60.0


def deployment(role: str, version: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "shop", "role": role, "app.kubernetes.io/version": version}
    return {
        "metadata": {"name": f"shop-{role}"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "shop", "role": role}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": f"shop:{version}"}]},
            },
        },
    }


def service(role: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"shop-{role}"},
        "spec": {"selector": {"app": "shop", "role": role}, "ports": [{"port": 8080}]},
    }


def http_route(parent: dict[str, Any], stable: int, canary: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop"},
        "spec": {
            "parentRefs": [parent],
            "hostnames": [HOST],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "shop-stable", "port": 8080, "weight": stable},
                        {"name": "shop-canary", "port": 8080, "weight": canary},
                    ]
                }
            ],
        },
    }


def traefik_conditions(route: dict[str, Any]) -> dict[str, tuple[str, str, int]]:
    entries = [
        p for p in (route.get("status") or {}).get("parents") or [] if p["controllerName"] == CONTROLLER_NAME
    ]
    return {
        c["type"]: (c["status"], c["reason"], c["observedGeneration"])
        for e in entries
        for c in e["conditions"]
    }


def wait_for(what: str, check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def test_weights_split_real_requests_and_traefik_writes_the_route_status(
    admin: kubernetes.client.ApiClient,
    namespace: str,
    pods: PodSimulator,
    traefik: Traefik,
    proxy: ServiceProxy,
) -> None:
    apps, core = kubernetes.client.AppsV1Api(admin), kubernetes.client.CoreV1Api(admin)
    custom = kubernetes.client.CustomObjectsApi(admin)
    apps.create_namespaced_deployment(namespace, deployment("stable", "1.0.0", 2))
    apps.create_namespaced_deployment(namespace, deployment("canary", "2.0.0", 1))
    for role in ("stable", "canary"):
        core.create_namespaced_service(namespace, service(role))
    wait_for(
        "the stand-in kube-proxy on both ClusterIPs",
        lambda: proxy.listening("shop-stable") and proxy.listening("shop-canary"),
    )

    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, ROUTES, http_route(traefik.parent_ref(), 80, 20)
    )

    def accepted_at(generation: int) -> Callable[[], dict[str, Any] | None]:
        def check() -> dict[str, Any] | None:
            route = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, ROUTES, "shop")
            live = {
                "Accepted": ("True", "Accepted", generation),
                "ResolvedRefs": ("True", "ResolvedRefs", generation),
            }
            return dict(route) if traefik_conditions(route) == live else None

        return check

    route = wait_for("Traefik to accept generation 1", accepted_at(1))
    entry = next(p for p in route["status"]["parents"] if p["controllerName"] == CONTROLLER_NAME)
    assert entry["parentRef"]["name"] == traefik.gateway

    # Accepted is written before the router serves: wait for Traefik's live configuration and ready pods.
    wait_for(
        "Traefik to route by 80/20", lambda: sorted(traefik.weights(namespace, "shop").values()) == [20, 80]
    )
    wait_for(
        "both versions to answer",
        lambda: {v for (c, v) in traefik.send(HOST, 20) if c == 200} == {"1.0.0", "2.0.0"},
    )

    split = traefik.split(HOST, namespace, 1000)
    answers = split.answers
    assert {code for code, _ in answers} == {200}, answers
    assert within_binomial(answers[(200, "2.0.0")], 1000, 0.2), answers
    assert split.counted == Counter(
        {("shop-stable", "200"): answers[(200, "1.0.0")], ("shop-canary", "200"): answers[(200, "2.0.0")]}
    )

    # The next step: 50/50 is a new generation; Traefik writes its status, then routes by it.
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 50
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = 50
    updated = custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, ROUTES, "shop", route)
    assert updated["metadata"]["generation"] == 2
    wait_for("Traefik to accept generation 2", accepted_at(2))
    wait_for(
        "Traefik to route by 50/50", lambda: sorted(traefik.weights(namespace, "shop").values()) == [50, 50]
    )

    # Half the canary's requests fail: Traefik's own metrics, which an analysis reads, count them.
    proxy.set_error_rate("2.0.0", 0.5)
    split = traefik.split(HOST, namespace, 1000)
    answers = split.answers
    canary = answers[(200, "2.0.0")] + answers[(500, "2.0.0")]
    assert within_binomial(canary, 1000, 0.5), answers
    assert within_binomial(answers[(500, "2.0.0")], canary, 0.5), answers
    assert answers[(500, "1.0.0")] == 0
    assert split.counted[("shop-canary", "500")] == answers[(500, "2.0.0")]
    assert split.counted[("shop-canary", "200")] == answers[(200, "2.0.0")]


def test_a_route_to_a_missing_service_is_not_resolved_by_traefik(
    admin: kubernetes.client.ApiClient, namespace: str, traefik: Traefik
) -> None:
    custom = kubernetes.client.CustomObjectsApi(admin)
    kubernetes.client.CoreV1Api(admin).create_namespaced_service(namespace, service("stable"))
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, ROUTES, http_route(traefik.parent_ref(), 100, 0)
    )
    conditions = wait_for(
        "Traefik's verdict on generation 1",
        lambda: traefik_conditions(
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, ROUTES, "shop")
        ),
    )
    assert conditions["ResolvedRefs"][0] == "False", conditions
    assert conditions["ResolvedRefs"][1] == "BackendNotFound", conditions
    assert conditions["ResolvedRefs"][2] == 1
