"""Gateway API routing on the real control plane: how soon the route follows the rollout.

One Release of one component routed by an HTTPRoute (the Gateway API CRDs of the pinned module;
`shepherd.lab.gatewayapi.RouteStatusWriter` accepting each generation, as a gateway's controller would).
Over 20 runs of a new version with steps [setWeight 10, pause 1s, setWeight 20, pause]:
1. step due -> route write: from the moment the 1 s pause is due (its stepSince + 1 s, written by the
   operator) to the operator's PATCH of the route for setWeight 20 (the API server's audit log);
2. abort -> route write: from the API server receiving `shepherd.dev/abort` to the operator's PATCH that
   returns all weight to stable;
3. the operator's writes per step (POST/PUT/PATCH/DELETE in the audit log, the Lease's left out) and
   how many of them went to the route.

Run: .venv/bin/python bench/gateway_latency.py   (after make cluster-binaries)
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
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes

from shepherd.lab.cluster import OperatorProcess, install_chart
from shepherd.lab.controlplane import ADMIN, ControlPlane, install_gateway_api_crds
from shepherd.lab.gatewayapi import RouteStatusWriter
from shepherd.lab.podsim import PodSimulator

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION = "shepherd.dev", "v1alpha1"
RUNS = 20
NAMESPACE = "bench"
STEPS = [{"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 20}, {"pause": {}}]
WRITES = {"create", "update", "patch", "delete"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


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
    workdir = Path(tempfile.mkdtemp(prefix="shepherd-gateway-"))
    try:
        print(json.dumps(bench(workdir), indent=2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def bench(workdir: Path) -> dict[str, Any]:
    with (
        ControlPlane(REPO / ".cluster" / "bin", workdir, audit=True) as plane,
        PodSimulator(plane.kubeconfig),
    ):
        install_gateway_api_crds(plane, REPO / ".cluster" / "crds" / "gateway-api")
        with RouteStatusWriter(plane.kubeconfig):
            return measure(plane, workdir)


def measure(plane: ControlPlane, workdir: Path) -> dict[str, Any]:
    chart = install_chart(plane, REPO / "charts" / "shepherd")
    operator_user = f"system:serviceaccount:{chart.namespace}:{chart.service_account}"
    admin = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
    custom: Any = kubernetes.client.CustomObjectsApi(admin)
    kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": NAMESPACE}})
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
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "releases", release("0"))
        wait_for("the first revision", lambda: status().get("phase") == "Succeeded")
        for run in range(1, RUNS + 1):
            began = time.time()
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "releases", "app", {"spec": release(str(run))["spec"]}
            )
            seen: dict[int, float] = {}

            wait_for("the hold", functools.partial(at_the_hold, status, run + 1, seen))
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
            wait_for("the rollback", lambda: status().get("phase") == "RolledBack")
            requests = [e for e in plane.audited_requests(ADMIN, aborted) if e["stage"] == "ResponseComplete"]
            asked = min(stamp(e["requestReceivedTimestamp"]) for e in requests if e["verb"] == "patch")
            returned = [
                e
                for e in audited(aborted)
                if e["verb"] == "patch" and e["objectRef"].get("resource") == "httproutes"
            ]
            abort_to_route.append(stamp(returned[0]["requestReceivedTimestamp"]) - asked)
    admin.close()
    return {
        "runs": RUNS,
        "step_due_to_route_write_seconds": {
            "p50": percentile(due_to_route, 0.5),
            "p99": percentile(due_to_route, 0.99),
        },
        "abort_to_route_write_seconds": {
            "p50": percentile(abort_to_route, 0.5),
            "p99": percentile(abort_to_route, 0.99),
        },
        "writes_per_step": sum(writes_per_step) / len(writes_per_step),
        "route_writes_per_step": sum(route_writes_per_step) / len(route_writes_per_step),
        "writes_per_step_by_kind": {k: n / (RUNS * len(STEPS)) for k, n in by_kind.most_common()},
    }


if __name__ == "__main__":
    sys.exit(main())
