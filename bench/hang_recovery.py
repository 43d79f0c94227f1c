"""Hang recovery: from a write the API server never answers to the Release moving again.

On the real control plane (`make cluster-binaries`), the operator runs as `shepherd run` with the chart's
arguments and ServiceAccount token and a small `--request-timeout` (default 5s), and talks to the API
server through the fault proxy. Each run updates a one-component Release to a new version (one step:
setWeight 50); the first write to that Release or its Deployments after its canary's creation hangs: it
is never answered nor closed, and never reaches the server (`--hang after`: the server applies it, its
answer is withheld). Measured, from the moment the proxy began to hold that write:

- to the next write of that Release the server answered (it moves again);
- to the revision's Succeeded, read from the API server.

Expected: the request timeout, then the first backoff (1 to 2s), then a pass. Twenty runs (--runs), two
with --smoke. Prints the figures as JSON, with the request timeout they are against.
Run: .venv/bin/python bench/hang_recovery.py [--runs N | --smoke] [--request-timeout SECONDS]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kubernetes

from benchlib import REPO, admin_client, fail, need_control_plane, parser, quickstart, spread, wait_for
from shepherd.lab.cluster import OperatorProcess, install_chart
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.faultproxy import Exchange, FaultProxy, Hang, fault, route_through
from shepherd.lab.podsim import PodSimulator

GROUP, VERSION, PLURAL = "shepherd.dev", "v1alpha1", "releases"
NAMESPACE, NAME = "hang", "shop"
RUNS, SMOKE_RUNS = 20, 2
REQUEST_TIMEOUT = 5.0
WRITES = ("POST", "PUT", "PATCH", "DELETE")
# Of the Release and its Deployments: what the hung write is chosen from, and what shows it moving again.
RELEASE_WRITES = rf"/namespaces/{NAMESPACE}/(releases/{NAME}(/|$)|deployments/{NAME}-)"
TIMEOUT = 120.0


def manifest(version: str) -> dict[str, Any]:
    release = quickstart(version)
    spec = release["spec"]
    api = spec["components"][0]
    api["replicas"] = 2
    spec["components"] = [api]
    spec["strategy"]["canary"]["steps"] = [{"setWeight": 50}]
    spec["postRelease"] = {}
    return release


class Run:
    """The Release, read as the admin, and the proxy the operator writes through."""

    def __init__(self, admin: kubernetes.client.ApiClient, proxy: FaultProxy) -> None:
        self.custom: Any = kubernetes.client.CustomObjectsApi(admin)
        self.proxy = proxy

    def status(self) -> dict[str, Any]:
        release = self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
        return dict(release.get("status") or {})

    def succeeded(self, version: str) -> bool:
        status = self.status()
        return status.get("phase") == "Succeeded" and status.get("version") == version

    def apply(self, version: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, NAME, {"spec": manifest(version)["spec"]}
        )

    def once(self, version: str, hang: Hang) -> tuple[float, float, Exchange]:
        """Seconds from the hang to the Release's next answered write, and to its Succeeded; the hung
        write."""
        hung_write = fault(*WRITES, path=RELEASE_WRITES, hang=hang, times=1)
        self.proxy.reset_counts()
        created = self.proxy.kill_at(1, lambda: self.proxy.inject(hung_write))
        self.apply(version)
        wait_for(f"the write after {version}'s canary to hang", lambda: self.proxy.hung(), TIMEOUT)
        if not created.fired.is_set():
            fail(f"a write hung before {version}'s canary was created")
        [hung] = self.proxy.hung()
        wait_for(f"{version} Succeeded", lambda: self.succeeded(version), TIMEOUT, poll=0.05)
        done = time.monotonic()
        moved = next(iter(self.proxy.answered(RELEASE_WRITES, after=hung.at)), None)
        if moved is None:
            fail(f"no write of {NAME} was answered after the hang, yet {version} Succeeded")
        self.proxy.clear()
        self.proxy.release()
        return moved.at - hung.at, done - hung.at, hung


def measure(runs: int, request_timeout: float, hang: Hang, workdir: Path) -> dict[str, Any]:
    moving: list[float] = []
    succeeded: list[float] = []
    hung_writes: Counter[str] = Counter()
    with (
        ControlPlane(need_control_plane(), workdir) as plane,
        PodSimulator(plane.kubeconfig),
        admin_client(plane.kubeconfig) as admin,
        FaultProxy.for_control_plane(plane, writes=rf"/namespaces/{NAMESPACE}/deployments$") as proxy,
    ):
        chart = install_chart(plane, REPO / "charts" / "shepherd")
        core: Any = kubernetes.client.CoreV1Api(admin)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        operator = OperatorProcess(
            plane, chart, workdir, extra_args=(f"--request-timeout={request_timeout:g}s",)
        )
        route_through(operator, proxy)
        with operator:
            run = Run(admin, proxy)
            run.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest("1.0.0"))
            wait_for("the first revision", lambda: run.succeeded("1.0.0"), TIMEOUT)
            for index in range(1, runs + 1):
                seconds_to_moving, seconds_to_succeeded, hung = run.once(f"1.1.{index}", hang)
                moving.append(seconds_to_moving)
                succeeded.append(seconds_to_succeeded)
                hung_writes[f"{hung.verb} {hung.path.rsplit('/namespaces/', 1)[-1]}"] += 1
    to_moving = spread(moving, "hung write to moving again")
    return {
        "runs": runs,
        "request_timeout_seconds": request_timeout,
        "hang": hang,
        "hung_to_moving_seconds": to_moving,
        "hung_to_succeeded_seconds": spread(succeeded, "hung write to Succeeded"),
        "moving_over_request_timeout": {q: to_moving[q] / request_timeout for q in ("p50", "p99")},
        "hung_writes": dict(hung_writes),
        "all_hung_to_moving_seconds": [round(v, 3) for v in moving],
    }


def main(argv: Sequence[str] | None = None) -> int:
    command = parser(__doc__)
    command.add_argument("--runs", type=int, default=RUNS, help=f"hung writes (default {RUNS})")
    command.add_argument(
        "--request-timeout",
        type=float,
        default=REQUEST_TIMEOUT,
        help=f"the operator's --request-timeout in seconds (default {REQUEST_TIMEOUT:g})",
    )
    command.add_argument(
        "--hang",
        choices=("before", "after"),
        default="before",
        help="before: the write never reaches the server; after: applied, its answer withheld",
    )
    options = command.parse_args(argv)
    runs = SMOKE_RUNS if options.smoke else options.runs
    workdir = Path(tempfile.mkdtemp(prefix="shepherd-hang-"))
    try:
        figures = measure(runs, options.request_timeout, options.hang, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
