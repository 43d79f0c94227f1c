"""The end of `shepherd demo`: a Gateway API canary through a real gateway on the real control plane.

When this checkout holds the control plane's binaries and the Gateway API CRDs (`make cluster-binaries`)
and Traefik (`make gateway-binaries`), the demo starts kube-apiserver, etcd and kube-controller-manager,
installs the chart with helm, runs the operator with the chart's ServiceAccount, and has Traefik serve an
HTTPRoute that Shepherd sets the weights of, step by step. At each step it sends real requests through
Traefik and prints how many each version answered. Without those binaries it says why not.

The route and the Release are built here for the stories of
tests/controlplane/test_release_through_a_real_gateway.py too.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from shepherd.kube import KubeAPI, ReleaseKey, load_configuration
from shepherd.lab.cluster import OperatorProcess, install_chart
from shepherd.lab.controlplane import (
    ControlPlane,
    ControlPlaneError,
    binaries_problem,
    gateway_api_crds_problem,
    install_gateway_api_crds,
)
from shepherd.lab.demo import DemoError, Kubectl, ProgressWatcher, console
from shepherd.lab.gateway import ServiceProxy, Split, Traefik, traefik_problem
from shepherd.lab.podsim import PodSimulator

HOST = "shop.example"
RELEASE, COMPONENT, PORT = "shop", "api", 8080
STABLE, CANARY = f"{RELEASE}-{COMPONENT}-stable", f"{RELEASE}-{COMPONENT}-canary"
# Where `make cluster-binaries`, `make gateway-api-crds` and `make gateway-binaries` put what the demo
# needs, from the checkout `make demo` runs in (the variables are the test suite's too).
BIN_DIR = Path(os.environ.get("SHEPHERD_CLUSTER_BIN", ".cluster/bin"))
GATEWAY_API_CRDS = Path(os.environ.get("SHEPHERD_GATEWAY_API_CRDS", ".cluster/crds/gateway-api"))
CHART = Path("charts/shepherd")
NAMESPACE = "shop"
KEY = ReleaseKey(NAMESPACE, RELEASE)
DEMO_WEIGHTS = (20, 50, 80)
DEMO_REQUESTS = 400
TIMEOUT_SECONDS = 60.0


def user_route(parent: Mapping[str, Any]) -> dict[str, Any]:
    """The HTTPRoute as its owner wrote it: a rule of their own (/admin), and the split of the component's
    two Services that Shepherd sets the weights of, all on stable at rest."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": RELEASE, "labels": {"team": "shop"}},
        "spec": {
            "parentRefs": [dict(parent)],
            "hostnames": [HOST],
            "rules": [
                {
                    "name": "admin",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                    "backendRefs": [{"name": f"{RELEASE}-admin", "port": PORT}],
                },
                {
                    "name": "main",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"name": STABLE, "port": PORT, "weight": 100},
                        {"name": CANARY, "port": PORT, "weight": 0},
                    ],
                },
            ],
        },
    }


def admin_service() -> dict[str, Any]:
    """The Service of the route's own rule: a gateway resolves every backendRef, not only Shepherd's."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{RELEASE}-admin"},
        "spec": {"selector": {"app": f"{RELEASE}-admin"}, "ports": [{"port": PORT}]},
    }


def routed_release(
    version: str, steps: Sequence[Mapping[str, Any]], analysis: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Release `shop` of one component, `api`, routed by the weights of HTTPRoute `shop`."""
    container = {
        "name": COMPONENT,
        "image": f"ghcr.io/example/shop-api:{version}",
        "ports": [{"name": "http", "containerPort": PORT}],
    }
    spec: dict[str, Any] = {
        "version": version,
        "progressDeadline": "1m",
        "components": [{"name": COMPONENT, "replicas": 2, "template": {"spec": {"containers": [container]}}}],
        "strategy": {"canary": {"trafficRouting": {"gatewayAPI": {"httpRoute": RELEASE}}, "steps": [*steps]}},
    }
    if analysis is not None:
        spec["analysis"] = dict(analysis)
    return {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": RELEASE},
        "spec": spec,
    }


def live_weights(traefik: Traefik, namespace: str) -> tuple[int, int]:
    """The (stable, canary) weights Traefik routes the route's split by, as its live configuration holds
    them (a backend it leaves out weighs 0)."""
    weights = traefik.weights(namespace, RELEASE)
    found = {
        role: sum(w for name, w in weights.items() if name.startswith(f"{namespace}-{service}-"))
        for role, service in (("stable", STABLE), ("canary", CANARY))
    }
    return found["stable"], found["canary"]


def describe(split: Split, stable: str, canary: str) -> str:
    """One line: how many requests each version answered, with Traefik's own count beside."""
    answered = {version: split.answered_by(version) for version in (stable, canary)}
    counted = {service: split.counted_for(service) for service in (STABLE, CANARY)}
    errors = sum(n for (code, _), n in split.answers.items() if code >= 500)
    return (
        f"{split.requests} requests: {stable} answered {answered[stable]} "
        f"({answered[stable] / split.requests:.1%}), {canary} answered {answered[canary]} "
        f"({answered[canary] / split.requests:.1%}), {errors} errors; "
        f"Traefik counted {counted[STABLE]} to {STABLE}, {counted[CANARY]} to {CANARY}"
    )


def gateway_demo_problem() -> str | None:
    """Why this checkout cannot run the Gateway API canary, or None when it can."""
    if not (CHART / "Chart.yaml").is_file():
        return f"no chart at {CHART}: run the demo from the repository's checkout (`make demo`)"
    return binaries_problem(BIN_DIR) or gateway_api_crds_problem(GATEWAY_API_CRDS) or traefik_problem(BIN_DIR)


def wait_until(what: str, check: Callable[[], bool], timeout: float = TIMEOUT_SECONDS) -> None:
    """Poll `check` until it holds; TimeoutError, naming what, at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def ready_to_count(traefik: Traefik, namespace: str, canary_weight: int, versions: set[str]) -> None:
    """Wait until Traefik routes by (100 - canary_weight, canary_weight) and each of `versions`, and no
    other, answers requests: Traefik writes a route's status before its new weights are live."""
    weights = (100 - canary_weight, canary_weight)
    wait_until(f"Traefik to route by {weights}", lambda: live_weights(traefik, namespace) == weights)
    wait_until(
        f"{' and '.join(sorted(versions))} to answer",
        lambda: {version for _, version in traefik.send(HOST, 20)} == versions,
    )


@contextmanager
def real_cluster_with_traefik(workdir: Path) -> Iterator[tuple[ControlPlane, Traefik]]:
    """The control plane with the Gateway API CRDs, the chart and its operator, simulated pods, Traefik
    serving Gateway gateway-system/edge, and the stand-in kube-proxy for the Services of NAMESPACE."""
    with ExitStack() as stack:
        plane = stack.enter_context(ControlPlane(BIN_DIR, workdir / "controlplane"))
        install_gateway_api_crds(plane, GATEWAY_API_CRDS)
        chart = install_chart(plane, CHART)
        plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        stack.enter_context(PodSimulator(plane.kubeconfig))
        stack.enter_context(OperatorProcess(plane, chart, workdir))
        traefik = stack.enter_context(Traefik(plane, BIN_DIR, workdir / "traefik"))
        stack.enter_context(ServiceProxy(plane.kubeconfig, NAMESPACE))
        yield plane, traefik


def run_gateway_demo() -> None:
    """Start the real control plane and Traefik, run the canary through them, and stop them all."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shepherd-gateway-demo-") as folder:
        try:
            with real_cluster_with_traefik(Path(folder)) as (plane, traefik):
                console.print(
                    f"[bold]Real control plane[/] {plane.version()} at {plane.url}, the chart installed by "
                    f"helm, the operator on its ServiceAccount; [bold]Traefik[/] serving Gateway "
                    f"{traefik.namespace}/{traefik.gateway} at {traefik.url} "
                    f"(all started in {time.monotonic() - started:.0f}s)"
                )
                api = KubeAPI(load_configuration(str(plane.kubeconfig)))
                try:
                    canary_through_traefik(Kubectl(plane.kubeconfig), ProgressWatcher(api, KEY), traefik)
                finally:
                    api.close()
        except (ControlPlaneError, TimeoutError) as error:
            raise DemoError(f"the Gateway API canary failed: {error}") from error
    console.print(f"[dim]The Gateway API canary took {time.monotonic() - started:.0f}s in all.[/]")


def canary_through_traefik(kubectl: Kubectl, watcher: ProgressWatcher, traefik: Traefik) -> None:
    """Revision 1.0.0 on stable, then 1.1.0 through setWeight 20, 50 and 80, each a pause that the demo
    ends with `kubectl release promote` once it has counted where real requests went."""
    steps: list[dict[str, Any]] = []
    for weight in DEMO_WEIGHTS:
        steps += [{"setWeight": weight}, {"pause": {}}]
    first = [user_route(traefik.parent_ref()), admin_service(), routed_release("1.0.0", steps)]
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump_all(first, sort_keys=False))
    watcher.wait_for("Succeeded", lambda s: s.get("phase") == "Succeeded" and s.get("revision") == 1)
    at_rest(traefik, "1.0.0")

    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump(routed_release("1.1.0", steps)))
    for step, weight in enumerate(DEMO_WEIGHTS, start=1):
        watcher.wait_for(f"the pause after setWeight {weight}", paused_at(2 * step - 1))
        ready_to_count(traefik, NAMESPACE, weight, {"1.0.0", "1.1.0"})
        split = traefik.split(HOST, NAMESPACE, DEMO_REQUESTS)
        route = f"route {100 - weight}/{weight}"
        console.print(f"[magenta]setWeight {weight}, {route}:[/] {describe(split, '1.0.0', '1.1.0')}")
        kubectl("release", "promote", RELEASE, "-n", NAMESPACE)
    watcher.wait_for("Succeeded", lambda s: s.get("phase") == "Succeeded" and s.get("revision") == 2)
    at_rest(traefik, "1.1.0")


def paused_at(step: int) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate of the Release's status: paused at step `step` (0-based)."""
    return lambda status: status.get("phase") == "Paused" and status.get("currentStep") == step


def at_rest(traefik: Traefik, version: str) -> None:
    """Once the route is back at 100/0 and only `version` answers: where requests go."""
    ready_to_count(traefik, NAMESPACE, 0, {version})
    split = traefik.split(HOST, NAMESPACE, DEMO_REQUESTS)
    answered = split.answered_by(version)
    console.print(
        f"[magenta]at rest, route 100/0:[/] {split.requests} requests: {version} answered {answered} "
        f"({answered / split.requests:.0%}); Traefik counted {split.counted_for(STABLE)} to {STABLE}"
    )
