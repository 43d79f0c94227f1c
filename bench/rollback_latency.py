"""How fast a bad canary is rolled back: from the moment its traffic turns bad to zero canary replicas.

Everything real but the cluster: the local Kubernetes API, the operator, the real Prometheus
scraping every second, and an exporter whose error rate the bench flips from 0% to 20%.
Twenty runs (three with --smoke); p50 and p99 are printed, and as a multiple of (analysis interval +
scrape interval). Zero canary replicas is read from the API: every canary Deployment of the Release gone
or scaled to zero. Target: p99 within one analysis interval + one scrape interval + 1s.

Run: .venv/bin/python bench/rollback_latency.py [--runs N | --smoke]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes

from benchlib import admin_client, fail, kubectl_apply, local_api, parser, quickstart, spread, wait_for
from shepherd.kube import GROUP, PLURAL, VERSION, load_configuration
from shepherd.lab.exporter import SeriesKey, TrafficExporter
from shepherd.lab.promserver import PrometheusServer
from shepherd.runner import OperatorOptions, OperatorThread

NAMESPACE, NAME = "default", "shop"
COMPONENTS = ("api", "web")
INTERVAL_SECONDS = 2.0
SCRAPE_SECONDS = 1.0
RUNS, SMOKE_RUNS = 20, 3
TIMEOUT = 60.0
SELECTOR = 'namespace="{{namespace}}",release="{{release}}",version="{{version}}"'
ERROR_RATE = (
    f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[3s]))'
    f" / sum(rate(http_requests_total{{{SELECTOR}}}[3s]))"
)


def manifest(version: str, prometheus: str) -> dict[str, Any]:
    release = quickstart(version)
    spec = release["spec"]
    spec["strategy"]["canary"]["steps"] = [{"setWeight": 50}, {"analysis": {}}]
    spec["postRelease"] = {}
    spec["analysis"] = {
        "prometheus": {"address": prometheus, "timeout": "2s"},
        "interval": f"{INTERVAL_SECONDS:g}s",
        "metrics": [
            {"name": "error-rate", "query": ERROR_RATE, "max": 0.05, "count": 100, "inconclusiveLimit": 100}
        ],
    }
    return release


def serve(exporter: TrafficExporter, version: str, error_ratio: float) -> None:
    for component in COMPONENTS:
        exporter.set_traffic(
            SeriesKey(NAMESPACE, NAME, component, version, "pod"), rps=50, error_ratio=error_ratio
        )


class Client:
    """The Release applied by kubectl; it and its canary Deployments read from the API server (not the
    operator's cache)."""

    def __init__(self, kubeconfig: Path, admin: kubernetes.client.ApiClient) -> None:
        self.kubeconfig = kubeconfig
        self.custom: Any = kubernetes.client.CustomObjectsApi(admin)
        self.apps: Any = kubernetes.client.AppsV1Api(admin)

    def status(self) -> dict[str, Any]:
        release = self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
        return dict(release.get("status") or {})

    def canary_replicas(self) -> int:
        """The replicas the canary Deployments of all components ask for (a deleted one asks for none)."""
        total = 0
        for component in COMPONENTS:
            try:
                deployment = self.apps.read_namespaced_deployment(f"{NAME}-{component}-canary", NAMESPACE)
            except kubernetes.client.ApiException as error:
                if error.status == 404:
                    continue
                raise
            total += deployment.spec.replicas or 0
        return total

    def measured(self, version: str) -> bool:
        """Whether the canary of `version` has passed a measurement (its traffic is measured as good)."""
        return any(
            m["result"] == "Successful" and f'version="{version}"' in m["query"]
            for m in self.status().get("analysis") or []
        )

    def apply(self, release: dict[str, Any]) -> None:
        kubectl_apply(self.kubeconfig, release)


def roll_back(
    client: Client,
    exporter: TrafficExporter,
    prometheus: str,
    version: str,
    delay: float,
) -> float:
    """Seconds from the traffic of a measured-good canary of `version` turning bad to zero canary replicas."""
    serve(exporter, version, 0.0)
    client.apply(manifest(version, prometheus))
    wait_for(f"a good measurement of {version}", lambda: client.measured(version), TIMEOUT)
    if client.canary_replicas() == 0:
        fail(f"the canary of {version} has no replicas before its traffic turned bad")
    time.sleep(delay)  # part of what is measured (where in the cycle it turns bad), not a synchronisation
    turned_bad = time.monotonic()
    serve(exporter, version, 0.2)
    wait_for("zero canary replicas", lambda: client.canary_replicas() == 0, TIMEOUT, poll=0.01)
    latency = time.monotonic() - turned_bad
    status = client.status()
    if status.get("reason") != "AnalysisFailed":
        fail(f"{version} is {status.get('phase')} ({status.get('message')}), not rolled back by its analysis")
    return latency


def measure(runs: int) -> list[float]:
    options = OperatorOptions(standalone=True, resync_seconds=300)
    latencies = []
    with (
        TrafficExporter() as exporter,
        PrometheusServer([exporter.target]) as prometheus,
        local_api() as local,
        admin_client(local.kubeconfig_path) as admin,
        OperatorThread(load_configuration(str(local.kubeconfig_path)), options),
    ):
        client = Client(local.kubeconfig_path, admin)
        serve(exporter, "1.0.0", 0.0)
        client.apply(manifest("1.0.0", prometheus.url))
        wait_for("the first revision", lambda: client.status().get("phase") == "Succeeded", TIMEOUT)
        phases = random.Random(20261122)
        for run in range(1, runs + 1):
            # Turn bad at a random point of the measurement cycle, not always right after a measurement.
            delay = phases.uniform(0, INTERVAL_SECONDS)
            latencies.append(roll_back(client, exporter, prometheus.url, f"1.1.{run}", delay))
    return latencies


def main() -> int:
    command = parser(__doc__)
    command.add_argument("--runs", type=int, default=RUNS, help=f"bad canaries rolled back (default {RUNS})")
    options = command.parse_args()
    runs = SMOKE_RUNS if options.smoke else options.runs
    latencies = measure(runs)
    budget = INTERVAL_SECONDS + SCRAPE_SECONDS
    figures = spread(latencies, "rollback latency")
    p50, p99 = figures["p50"], figures["p99"]
    setting = f"analysis interval {INTERVAL_SECONDS:g}s, scrape {SCRAPE_SECONDS:g}s"
    print(f"rollback latency over {len(latencies)} runs ({setting})")
    print(f"  p50 {p50:.2f}s = {p50 / budget:.2f} x (interval + scrape)")
    print(f"  p99 {p99:.2f}s = {p99 / budget:.2f} x (interval + scrape)")
    print(f"  target p99 <= {budget + 1:.0f}s: {'met' if p99 <= budget + 1 else 'NOT met'}")
    print(f"  all: {' '.join(f'{v:.2f}' for v in latencies)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
