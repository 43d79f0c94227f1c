"""What a reconcile costs and how punctual the wake-ups are.

1. The pure core: decide() latency (p50/p99) for 1, 5 and 20 components.
2. One live rollout on the local API with ten 0.5s pauses and resync set to 5 minutes:
   how late each step starts after its pause is due (p50/p99), as a fraction of the
   resync interval a polling operator would need; API calls per reconcile.
3. Twenty Releases rolled out at once: wall time, reconciles, API calls per reconcile,
   peak memory of the process.

Run: make bench   (or .venv/bin/python bench/reconcile_cost.py)
"""

from __future__ import annotations

import copy
import os
import resource
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

from simulation import World, container

from shepherd import crdschema
from shepherd.core import Observations, decide
from shepherd.kube import KubeAPI, ReleaseKey, load_configuration
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread, install_crds
from shepherd.runner import OperatorOptions, OperatorThread

REPO = Path(__file__).resolve().parents[1]
RESYNC_SECONDS = 300.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spec_with(components: int, version: str = "1.1.0") -> dict[str, Any]:
    return {
        "version": version,
        "components": [
            {"name": f"c{i}", "replicas": 4, "template": container(f"img/c{i}:{version}")}
            for i in range(components)
        ],
        "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}},
    }


def bench_decide() -> None:
    print("decide() on a canary at 25% (pure core, no I/O)")
    for components in (1, 5, 20):
        world = World(spec_with(components, "1.0.0"))
        world.run_until("Succeeded")
        world.set_spec(spec_with(components))
        world.settle()
        release = world.release()
        observed = Observations(world.deployments, world.revisions)
        samples = []
        for _ in range(300):
            started = time.perf_counter()
            decide(release, observed, world.now)
            samples.append((time.perf_counter() - started) * 1e6)
        print(
            f"  {components:>2} components: p50 {percentile(samples, 0.5):7.0f} us"
            f"   p99 {percentile(samples, 0.99):7.0f} us"
        )


def quickstart(name: str, version: str, steps: list[dict[str, Any]]) -> str:
    base = next(
        d
        for d in yaml.safe_load_all((REPO / "examples/quickstart.yaml").read_text())
        if d and d["kind"] == "Release"
    )
    release = copy.deepcopy(base)
    release["metadata"]["name"] = name
    release["spec"]["version"] = version
    release["spec"]["strategy"]["canary"]["steps"] = steps
    release["spec"]["postRelease"] = {"bake": "0s"}
    for component in release["spec"]["components"]:
        component["template"]["spec"]["containers"][0]["image"] += f"-{version}"
    return yaml.safe_dump(release)


def wait(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("bench: timed out")
        time.sleep(0.02)


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def apply(local: LocalAPIThread, manifest: str) -> None:
    import subprocess

    kubectl = str(Path(sys.executable).with_name("kubectl"))
    env = os.environ | {"KUBECONFIG": str(local.kubeconfig_path)}
    subprocess.run(
        [kubectl, "apply", "-f", "-"], input=manifest, text=True, env=env, check=True, capture_output=True
    )


def bench_live() -> None:
    with LocalAPIThread(validate_custom_object=crdschema.validate) as local:
        install_crds(local.url, sorted((REPO / "crds").glob("*.yaml")))
        kubelet = KubeletSimulator(local.url)
        local.call(kubelet.start())
        configuration = load_configuration(str(local.kubeconfig_path))
        reader = KubeAPI(configuration)
        options = OperatorOptions(standalone=True, resync_seconds=RESYNC_SECONDS)
        with OperatorThread(configuration, options) as operator:
            runtime = operator.runtime
            assert runtime is not None
            phase = lambda name: (reader.get_release(ReleaseKey("default", name)) or {}).get("status", {})  # noqa: E731
            apply(local, quickstart("shop", "1.0.0", []))
            wait(lambda: phase("shop").get("phase") == "Succeeded")

            pauses = 12
            steps = [{"setWeight": 25}, *([{"pause": {"duration": "500ms"}}] * pauses), {"setWeight": 50}]
            calls_before, reconciles_before = runtime.api.calls, runtime.reconciles
            lateness: list[float] = []
            seen_step, seen_since = -1, None
            apply(local, quickstart("shop", "1.1.0", steps))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status = phase("shop")
                if status.get("revision") == 2 and status.get("phase") == "Succeeded":
                    break
                step, since = status.get("currentStep", 0), status.get("stepSince")
                if step == seen_step + 1 and since and seen_since and 2 <= step <= pauses + 1:
                    due = parse(seen_since) + timedelta(milliseconds=500)
                    lateness.append((parse(since) - due).total_seconds() * 1000)
                seen_step, seen_since = step, since
                time.sleep(0.01)
            calls = runtime.api.calls - calls_before
            reconciles = runtime.reconciles - reconciles_before
            print(f"one rollout, {len(steps)} steps, resync {RESYNC_SECONDS:.0f}s")
            print(
                f"  step start after its pause was due: p50 {percentile(lateness, 0.5):.0f} ms"
                f"   p99 {percentile(lateness, 0.99):.0f} ms   ({len(lateness)} pauses;"
                f" p99 = {percentile(lateness, 0.99) / 1000 / RESYNC_SECONDS:.5f} x resync)"
            )
            per_reconcile = calls / max(reconciles, 1)
            print(f"  reconciles {reconciles}, API calls {calls}, {per_reconcile:.1f} calls per reconcile")

            count = 20
            calls_before, reconciles_before = runtime.api.calls, runtime.reconciles
            manifests = "---\n".join(
                quickstart(f"app{index}", "1.0.0", [{"setWeight": 50}, {"pause": {"duration": "1s"}}])
                for index in range(count)
            )
            started = time.monotonic()
            apply(local, manifests)  # one kubectl apply of all twenty, as a GitOps sync would
            applied = time.monotonic()
            wait(lambda: all(phase(f"app{i}").get("phase") == "Succeeded" for i in range(count)), timeout=300)
            elapsed = time.monotonic() - applied
            calls = runtime.api.calls - calls_before
            reconciles = runtime.reconciles - reconciles_before
            print(f"{count} first releases at once")
            print(
                f"  applied in {applied - started:.1f}s (the API's schema and CEL admission), all Succeeded "
                f"{elapsed:.1f}s later; reconciles {reconciles}; "
                f"{calls / max(reconciles, 1):.1f} API calls per reconcile"
            )
        reader.close()
        local.call(kubelet.stop())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (local API + operator + kubelet): {peak_mib:.0f} MiB")


if __name__ == "__main__":
    bench_decide()
    bench_live()
