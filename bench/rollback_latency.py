"""How fast a bad canary is rolled back: from the moment its traffic turns bad to zero canary replicas.

Everything real but the cluster: the local Kubernetes API, the operator, the real Prometheus
scraping every second, and an exporter whose error rate the bench flips from 0% to 20%.
Twenty runs; p50 and p99 are printed, and as a multiple of (analysis interval + scrape interval).
Target: p99 within one analysis interval + one scrape interval + 1s.

Run: .venv/bin/python bench/rollback_latency.py [runs]
"""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from shepherd import crdschema
from shepherd.kube import KubeAPI, ReleaseKey, load_configuration
from shepherd.lab.exporter import SeriesKey, TrafficExporter
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread, install_crds
from shepherd.lab.promserver import PrometheusServer
from shepherd.runner import OperatorOptions, OperatorThread

REPO = Path(__file__).resolve().parents[1]
KEY = ReleaseKey("default", "shop")
INTERVAL_SECONDS = 2.0
SCRAPE_SECONDS = 1.0
SELECTOR = 'namespace="{{namespace}}",release="{{release}}",version="{{version}}"'
ERROR_RATE = (
    f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[3s]))'
    f" / sum(rate(http_requests_total{{{SELECTOR}}}[3s]))"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def manifest(version: str, prometheus: str) -> str:
    base = next(
        d
        for d in yaml.safe_load_all((REPO / "examples/quickstart.yaml").read_text())
        if d and d["kind"] == "Release"
    )
    release = copy.deepcopy(base)
    spec = release["spec"]
    spec["version"] = version
    for component in spec["components"]:
        component["template"]["spec"]["containers"][0]["image"] += f"-{version}"
    spec["strategy"]["canary"]["steps"] = [{"setWeight": 50}, {"analysis": {}}]
    spec["postRelease"] = {}
    spec["analysis"] = {
        "prometheus": {"address": prometheus, "timeout": "2s"},
        "interval": f"{INTERVAL_SECONDS:g}s",
        "metrics": [
            {"name": "error-rate", "query": ERROR_RATE, "max": 0.05, "count": 100, "inconclusiveLimit": 100}
        ],
    }
    return yaml.safe_dump(release)


def serve(exporter: TrafficExporter, version: str, error_ratio: float) -> None:
    for component in ("api", "web"):
        exporter.set_traffic(
            SeriesKey("default", "shop", component, version, "pod"), rps=50, error_ratio=error_ratio
        )


def wait(predicate: Any, timeout: float = 60.0, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("bench: timed out")
        time.sleep(poll)


def main(runs: int) -> None:
    kubectl = str(Path(sys.executable).with_name("kubectl"))
    with (
        TrafficExporter() as exporter,
        PrometheusServer([exporter.target]) as prometheus,
        LocalAPIThread(validate_custom_object=crdschema.validate) as local,
    ):
        install_crds(local.url, sorted((REPO / "crds").glob("*.yaml")))
        kubelet = KubeletSimulator(local.url)
        local.call(kubelet.start())
        env = os.environ | {"KUBECONFIG": str(local.kubeconfig_path)}

        def apply(text: str) -> None:
            subprocess.run(
                [kubectl, "apply", "-f", "-"], input=text, text=True, env=env, check=True, capture_output=True
            )

        configuration = load_configuration(str(local.kubeconfig_path))
        reader = KubeAPI(configuration)
        options = OperatorOptions(standalone=True, resync_seconds=300)

        def status() -> dict[str, Any]:
            return dict((reader.get_release(KEY) or {}).get("status") or {})

        def canary_gone() -> bool:
            uid = (reader.get_release(KEY) or {})["metadata"]["uid"]
            return "shop-api-canary" not in reader.owned_deployments(KEY, uid)

        with OperatorThread(configuration, options):
            serve(exporter, "1.0.0", 0.0)
            apply(manifest("1.0.0", prometheus.url))
            wait(lambda: status().get("phase") == "Succeeded")
            latencies = []
            phases = random.Random(20261122)
            for run in range(1, runs + 1):
                version = f"1.1.{run}"
                serve(exporter, version, 0.0)
                apply(manifest(version, prometheus.url))
                wait(
                    lambda version=version: any(
                        m["result"] == "Successful" and f'version="{version}"' in m["query"]
                        for m in status().get("analysis") or []
                    )
                )
                # Turn bad at a random point of the measurement cycle, not always right after a measurement.
                time.sleep(phases.uniform(0, INTERVAL_SECONDS))
                turned_bad = time.monotonic()
                serve(exporter, version, 0.2)
                wait(canary_gone)
                latencies.append(time.monotonic() - turned_bad)
                assert status()["reason"] == "AnalysisFailed", status()["message"]
        reader.close()
        local.call(kubelet.stop())
    budget = INTERVAL_SECONDS + SCRAPE_SECONDS
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    setting = f"analysis interval {INTERVAL_SECONDS:g}s, scrape {SCRAPE_SECONDS:g}s"
    print(f"rollback latency over {runs} runs ({setting})")
    print(f"  p50 {p50:.2f}s = {p50 / budget:.2f} x (interval + scrape)")
    print(f"  p99 {p99:.2f}s = {p99 / budget:.2f} x (interval + scrape)")
    print(f"  target p99 <= {budget + 1:.0f}s: {'met' if p99 <= budget + 1 else 'NOT met'}")
    print(f"  all: {' '.join(f'{v:.2f}' for v in latencies)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
