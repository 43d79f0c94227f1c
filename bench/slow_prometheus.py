"""Due steps of many Releases while one Release's Prometheus answers after a minute.

Everything real but the cluster: the local Kubernetes API and its simulated kubelet, the operator in a
thread (its outside pool of 16 threads for Prometheus, 32 for the API), the real Prometheus, and the fault
proxy in front of it holding every answer 60s for one Release. That Release's analysis queries each time
out at its connection's 2s and count errors, over and over; meanwhile N other Releases (100) step through
a 5s pause at once, as they did before without it (the control). Reported for both: how late each step
after the pause started (the status' stepSince of the next step minus the pause's stepSince + 5s, both
written by the operator), p50/p99; and the queries the slow Prometheus held.

With --smoke: 10 Releases, a 4s hold.

Run: make bench   (or .venv/bin/python bench/slow_prometheus.py [--smoke])
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes

from benchlib import admin_client, fail, local_api, parser, spread, stamp, wait_for
from shepherd.kube import load_configuration
from shepherd.lab.faultproxy import FaultProxy, fault
from shepherd.lab.promserver import PrometheusServer
from shepherd.runner import OperatorOptions, OperatorThread

GROUP, VERSION, PLURAL = "shepherd.dev", "v1alpha1", "releases"
NAMESPACE = "default"
PAUSE_SECONDS = 5.0
STEPS: list[dict[str, Any]] = [
    {"setWeight": 50},
    {"pause": {"duration": f"{PAUSE_SECONDS:g}s"}},
    {"pause": {}},
]


def release(name: str, version: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    container = {"name": "app", "image": f"registry.example/{name}:{version}"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Release",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "version": version,
            "components": [{"name": "app", "replicas": 2, "template": {"spec": {"containers": [container]}}}],
            "strategy": {"canary": {"steps": steps}},
            **spec,
        },
    }


def analysed(version: str, prometheus: str) -> dict[str, Any]:
    """A Release whose canary is measured every second, whatever Prometheus answers, for a long time."""
    metric = {"name": "up", "query": "vector(1)", "max": 2, "count": 100, "consecutiveErrorLimit": 100}
    analysis = {"prometheus": {"address": prometheus, "timeout": "2s"}, "interval": "1s", "metrics": [metric]}
    return release("slow", version, [{"setWeight": 50}, {"analysis": {}}], analysis=analysis)


def main() -> int:
    options = parser(__doc__).parse_args()
    count, hold = (10, 4.0) if options.smoke else (100, 60.0)
    operator = OperatorOptions(standalone=True, resync_seconds=30)
    with (
        PrometheusServer([]) as prometheus,
        FaultProxy(prometheus.url, None) as slow_prometheus,
        local_api() as local,
        admin_client(local.kubeconfig_path) as admin,
        OperatorThread(load_configuration(str(local.kubeconfig_path)), operator),
    ):
        custom: Any = kubernetes.client.CustomObjectsApi(admin)

        def status(name: str) -> dict[str, Any]:
            found = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
            return dict(found.get("status") or {})

        def apply(manifests: list[dict[str, Any]]) -> None:
            def put(manifest: dict[str, Any]) -> None:
                name = manifest["metadata"]["name"]
                try:
                    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)
                except kubernetes.client.ApiException as error:
                    if error.status != 409:
                        raise
                    spec = {"spec": manifest["spec"]}
                    custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name, spec)

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(put, manifests))

        names = [f"app-{i}" for i in range(count)]
        apply([analysed("1.0.0", slow_prometheus.url), *(release(n, "1.0.0", STEPS) for n in names)])
        wait_for(
            "every first revision",
            lambda: all(status(n).get("phase") == "Succeeded" for n in ["slow", *names]),
            120 + count,
            poll=0.5,
        )

        def stepping(revision: int, version: str) -> list[float]:
            """Every Release to `version` (their `revision`): how late each step after the pause began."""
            apply([release(n, version, STEPS) for n in names])
            paused: dict[str, float] = {}
            lateness: dict[str, float] = {}

            def stepped() -> bool:
                listed = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
                for item in listed:
                    name, state = item["metadata"]["name"], item.get("status") or {}
                    if name == "slow" or state.get("revision") != revision or not state.get("stepSince"):
                        continue
                    if state.get("currentStep") == 1:
                        paused[name] = stamp(state["stepSince"])
                    elif state.get("currentStep") == 2 and name in paused and name not in lateness:
                        lateness[name] = stamp(state["stepSince"]) - (paused[name] + PAUSE_SECONDS)
                return len(lateness) == count

            wait_for(f"{count} Releases past their pause", stepped, 120 + count, poll=0.2)
            return list(lateness.values())

        alone = stepping(2, "1.1.0")
        apply([analysed("1.1.0", slow_prometheus.url)])
        wait_for("the slow Release measuring", lambda: bool(status("slow").get("analysis")), 60, poll=0.2)
        held = fault(delay=hold)
        slow_prometheus.inject(held)
        wait_for("queries held by the slow Prometheus", lambda: held.applied >= 2, 60, poll=0.1)
        beside = stepping(3, "1.2.0")
        queried = held.applied
        errors = [r for r in status("slow").get("analysis") or [] if r["result"] == "Error"]
        if not errors:
            fail("the slow Release counted no error: its queries were not held")
    print(f"{count} Releases past a {PAUSE_SECONDS:g}s pause at once; how late the step after it started:")
    for label, values in (("alone", alone), (f"while one Prometheus held its answers {hold:g}s", beside)):
        figures = spread(values, label)
        print(f"  {label}: p50 {figures['p50'] * 1000:.0f} ms  p99 {figures['p99'] * 1000:.0f} ms")
    print(f"  slow Prometheus: {queried} queries held, {len(errors)} errors recorded by its Release")
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"  ({time.monotonic() - started:.0f}s)")
    sys.exit(code)
