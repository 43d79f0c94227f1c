"""Gateway API routing on the real control plane: how soon the route follows the rollout.

One Release of one component routed by an HTTPRoute (the Gateway API CRDs of the pinned module;
`shepherd.lab.gatewayapi.RouteStatusWriter` accepting each generation, as a gateway's controller would).
Over 20 runs (2 with --smoke) of a new version with steps [setWeight 10, pause 1s, setWeight 20, pause]:
1. step due -> route write: from the moment the 1 s pause is due (its stepSince + 1 s, written by the
   operator) to the operator's PATCH of the route for setWeight 20 (the API server's audit log);
2. abort -> route write: from the API server receiving `shepherd.dev/abort` to the operator's PATCH that
   returns all weight to stable;
3. the operator's writes per step (POST/PUT/PATCH/DELETE in the audit log, the Lease's left out) and
   how many of them went to the route.

No gateway's data plane runs (routes are measured as the operator writes them), so Traefik is not needed;
the control plane and the Gateway API CRDs are (`make cluster-binaries`).

Run: .venv/bin/python bench/gateway_latency.py [--runs N | --smoke]   (after make cluster-binaries)
"""

from __future__ import annotations

import collections
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes

from benchlib import (
    GATEWAY_API_CRDS,
    REPO,
    admin_client,
    fail,
    need_control_plane,
    parser,
    spread,
    stamp,
    wait_for,
    wait_until_admitted,
)
from shepherd.lab.cluster import InstalledChart, OperatorProcess, install_chart
from shepherd.lab.controlplane import ADMIN, ControlPlane, install_gateway_api_crds
from shepherd.lab.gatewayapi import RouteStatusWriter
from shepherd.lab.podsim import PodSimulator

GROUP, VERSION = "shepherd.dev", "v1alpha1"
RUNS, SMOKE_RUNS = 20, 2
TIMEOUT = 120.0
NAMESPACE = "bench"
STEPS = [{"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 20}, {"pause": {}}]
WRITES = {"create", "update", "patch", "delete"}


def release(version: str) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": f"registry.example/app:{version}",
        "ports": [{"containerPort": 8080}],
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Release",
        "metadata": {"name": "app", "namespace": NAMESPACE},
        "spec": {
            "version": version,
            "components": [{"name": "app", "replicas": 2, "template": {"spec": {"containers": [container]}}}],
            "strategy": {"canary": {"trafficRouting": {"gatewayAPI": {"httpRoute": "app"}}, "steps": STEPS}},
        },
    }


def route() -> dict[str, Any]:
    backends = [
        {"name": "app-app-stable", "port": 8080, "weight": 100},
        {"name": "app-app-canary", "port": 8080, "weight": 0},
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "app", "namespace": NAMESPACE},
        "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": backends}]},
    }


def at_the_hold(status: Callable[[], dict[str, Any]], revision: int, seen: dict[int, float]) -> bool:
    """Whether `revision` holds at its indefinite pause; records when each step began (stepSince)."""
    now = status()
    if now.get("revision") == revision and now.get("stepSince"):
        seen.setdefault(now.get("currentStep", -1), stamp(now["stepSince"]))
    return bool(now.get("phase") == "Paused" and now.get("currentStep") == 3)


def main() -> int:
    command = parser(__doc__)
    command.add_argument("--runs", type=int, default=RUNS, help=f"new versions rolled out (default {RUNS})")
    options = command.parse_args()
    bin_dir = need_control_plane(gateway_api=True)
    workdir = Path(tempfile.mkdtemp(prefix="shepherd-gateway-"))
    try:
        print(json.dumps(bench(bin_dir, workdir, SMOKE_RUNS if options.smoke else options.runs), indent=2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def bench(bin_dir: Path, workdir: Path, runs: int) -> dict[str, Any]:
    with (
        ControlPlane(bin_dir, workdir, audit=True) as plane,
        PodSimulator(plane.kubeconfig),
        admin_client(plane.kubeconfig) as admin,
    ):
        install_gateway_api_crds(plane, GATEWAY_API_CRDS)
        chart = install_chart(plane, REPO / "charts" / "shepherd")
        with RouteStatusWriter(plane.kubeconfig):
            return measure(plane, chart, admin, workdir, runs)


def measure(
    plane: ControlPlane, chart: InstalledChart, admin: kubernetes.client.ApiClient, workdir: Path, runs: int
) -> dict[str, Any]:
    operator_user = f"system:serviceaccount:{chart.namespace}:{chart.service_account}"
    custom: Any = kubernetes.client.CustomObjectsApi(admin)
    core: Any = kubernetes.client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    custom.create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", route()
    )

    def status() -> dict[str, Any]:
        found = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "releases", "app")
        return dict(found.get("status") or {})

    def audited(since: float) -> list[dict[str, Any]]:
        return [e for e in plane.audited_requests(operator_user, since) if e["stage"] == "ResponseComplete"]

    due_to_route, abort_to_route, writes_per_step, route_writes_per_step = [], [], [], []
    by_kind: collections.Counter[str] = collections.Counter()
    with OperatorProcess(plane, chart, workdir):
        wait_until_admitted(custom, release("0"))
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "releases", release("0"))
        wait_for("the first revision", lambda: status().get("phase") == "Succeeded", TIMEOUT)
        for run in range(1, runs + 1):
            began = time.time()
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "releases", "app", {"spec": release(str(run))["spec"]}
            )
            seen: dict[int, float] = {}

            wait_for("the hold", functools.partial(at_the_hold, status, run + 1, seen), TIMEOUT)
            route_patches = [
                e
                for e in audited(began)
                if e["verb"] == "patch" and e["objectRef"].get("resource") == "httproutes"
            ]
            if 1 in seen and len(route_patches) >= 2:
                due_to_route.append(stamp(route_patches[1]["requestReceivedTimestamp"]) - (seen[1] + 1.0))
            writes = [
                e
                for e in audited(began)
                if e["verb"] in WRITES and e["objectRef"].get("resource") != "leases"
            ]
            writes_per_step.append(len(writes) / len(STEPS))
            route_writes_per_step.append(len(route_patches) / len(STEPS))
            by_kind.update(f"{e['verb']} {e['objectRef'].get('resource')}" for e in writes)

            aborted = time.time()
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                NAMESPACE,
                "releases",
                "app",
                {"metadata": {"annotations": {"shepherd.dev/abort": str(run)}}},
            )
            wait_for("the rollback", lambda: status().get("phase") == "RolledBack", TIMEOUT)
            requests = [e for e in plane.audited_requests(ADMIN, aborted) if e["stage"] == "ResponseComplete"]
            asked = min(stamp(e["requestReceivedTimestamp"]) for e in requests if e["verb"] == "patch")
            returned = [
                e
                for e in audited(aborted)
                if e["verb"] == "patch" and e["objectRef"].get("resource") == "httproutes"
            ]
            abort_to_route.append(stamp(returned[0]["requestReceivedTimestamp"]) - asked)
    if not sum(route_writes_per_step):
        fail(f"no PATCH of the HTTPRoute by the operator in the audit log over {runs} rollouts")
    return {
        "runs": runs,
        "step_due_to_route_write_seconds": spread(due_to_route, "step due to route write"),
        "abort_to_route_write_seconds": spread(abort_to_route, "abort to route write"),
        "writes_per_step": sum(writes_per_step) / len(writes_per_step),
        "route_writes_per_step": sum(route_writes_per_step) / len(route_writes_per_step),
        "writes_per_step_by_kind": {k: n / (runs * len(STEPS)) for k, n in by_kind.most_common()},
    }


if __name__ == "__main__":
    sys.exit(main())
