"""What a reconcile costs and how punctual the wake-ups are.

1. The pure core: decide() latency (p50/p99) for 1, 5 and 20 components.
2. One live rollout on the local API with twelve 0.5s pauses and resync set to 5 minutes:
   how late each step starts after its pause is due (p50/p99), as a fraction of the
   resync interval a polling operator would need; API calls per reconcile.
3. Twenty Releases rolled out at once: wall time, reconciles, API calls per reconcile,
   peak memory of the process.

With --smoke: 30 decide() samples, three pauses, three Releases.

Run: make bench   (or .venv/bin/python bench/reconcile_cost.py [--smoke])
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from benchlib import (
    REPO,
    admin_client,
    fail,
    kubectl_apply,
    local_api,
    parser,
    quickstart,
    spread,
    stamp,
    wait_for,
)

sys.path.insert(0, str(REPO / "tests" / "unit"))

from simulation import World, container

from shepherd.core import Observations, decide
from shepherd.handlers import Runtime
from shepherd.kube import GROUP, PLURAL, VERSION, load_configuration
from shepherd.runner import OperatorOptions, OperatorThread

RESYNC_SECONDS = 300.0
PAUSE_SECONDS = 0.5


@dataclass(frozen=True)
class Size:
    decide_samples: int  # per number of components
    pauses: int  # of the live rollout
    releases: int  # rolled out at once


FULL = Size(decide_samples=300, pauses=12, releases=20)
SMOKE = Size(decide_samples=30, pauses=3, releases=3)


def spec_with(components: int, version: str = "1.1.0") -> dict[str, Any]:
    return {
        "version": version,
        "components": [
            {"name": f"c{i}", "replicas": 4, "template": container(f"img/c{i}:{version}")}
            for i in range(components)
        ],
        "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}},
    }


def bench_decide(size: Size) -> None:
    print("decide() on a canary at 25% (pure core, no I/O)")
    for components in (1, 5, 20):
        world = World(spec_with(components, "1.0.0"))
        world.run_until("Succeeded")
        world.set_spec(spec_with(components))
        world.settle()
        release = world.release()
        observed = Observations(world.deployments, world.revisions)
        samples = []
        for _ in range(size.decide_samples):
            started = time.perf_counter()
            decide(release, observed, world.now)
            samples.append((time.perf_counter() - started) * 1e6)
        figures = spread(samples, f"decide() with {components} components")
        print(f"  {components:>2} components: p50 {figures['p50']:7.0f} us   p99 {figures['p99']:7.0f} us")


def release(name: str, version: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    made = quickstart(version)
    made["metadata"]["name"] = name
    made["spec"]["strategy"]["canary"]["steps"] = steps
    made["spec"]["postRelease"] = {"bake": "0s"}
    return made


@dataclass
class Live:
    """The local API with the operator running: Releases applied by kubectl, read as the admin."""

    kubeconfig: Path
    runtime: Runtime
    custom: Any

    def status(self, name: str) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)
        return dict(found.get("status") or {})

    def counts(self) -> tuple[int, int]:
        """The operator's API calls and reconciles so far."""
        return self.runtime.api.calls, self.runtime.reconciles

    def since(self, counts: tuple[int, int]) -> tuple[int, int]:
        """The operator's API calls and reconciles since `counts` was taken."""
        return self.runtime.api.calls - counts[0], self.runtime.reconciles - counts[1]


def bench_live(size: Size) -> None:
    options = OperatorOptions(standalone=True, resync_seconds=RESYNC_SECONDS)
    with (
        local_api() as local,
        admin_client(local.kubeconfig_path) as admin,
        OperatorThread(load_configuration(str(local.kubeconfig_path)), options) as operator,
    ):
        assert operator.runtime is not None
        live = Live(local.kubeconfig_path, operator.runtime, kubernetes.client.CustomObjectsApi(admin))
        one_rollout(live, size.pauses)
        many_at_once(live, size.releases)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (local API + operator + kubelet): {peak_mib:.0f} MiB")


def one_rollout(live: Live, pauses: int) -> None:
    """A second revision through `pauses` pauses: how late each step after a pause starts."""
    kubectl_apply(live.kubeconfig, release("shop", "1.0.0", []))
    wait_for("the first revision", lambda: live.status("shop").get("phase") == "Succeeded", 120)
    pause = {"pause": {"duration": f"{PAUSE_SECONDS * 1000:.0f}ms"}}
    steps: list[dict[str, Any]] = [{"setWeight": 25}, *([pause] * pauses), {"setWeight": 50}]
    before = live.counts()
    lateness: list[float] = []
    seen_step, seen_since = -1, None
    kubectl_apply(live.kubeconfig, release("shop", "1.1.0", steps))
    deadline = time.monotonic() + 120
    while (now := live.status("shop")).get("revision") != 2 or now.get("phase") != "Succeeded":
        if time.monotonic() > deadline:
            fail(f"the rollout of {len(steps)} steps is {now.get('phase')} after 120s")
        step, since = now.get("currentStep", 0), now.get("stepSince")
        if step == seen_step + 1 and since and seen_since and 2 <= step <= pauses + 1:
            lateness.append((stamp(since) - stamp(seen_since) - PAUSE_SECONDS) * 1000)
        seen_step, seen_since = step, since
        time.sleep(0.01)
    calls, reconciles = live.since(before)
    late = spread(lateness, "step starts after a pause")
    print(f"one rollout, {len(steps)} steps, resync {RESYNC_SECONDS:.0f}s")
    print(
        f"  step start after its pause was due: p50 {late['p50']:.0f} ms   p99 {late['p99']:.0f} ms"
        f"   ({len(lateness)} pauses; p99 = {late['p99'] / 1000 / RESYNC_SECONDS:.5f} x resync)"
    )
    print(
        f"  reconciles {reconciles}, API calls {calls}, {calls / max(reconciles, 1):.1f} calls per reconcile"
    )


def many_at_once(live: Live, count: int) -> None:
    """`count` first revisions applied at once: how long until all have succeeded, and at what cost."""
    before = live.counts()
    manifests = [
        release(f"app{index}", "1.0.0", [{"setWeight": 50}, {"pause": {"duration": "1s"}}])
        for index in range(count)
    ]
    started = time.monotonic()
    kubectl_apply(live.kubeconfig, *manifests)  # at once, as a GitOps sync would
    applied = time.monotonic()
    elapsed = wait_for(
        f"{count} Releases to succeed",
        lambda: all(live.status(f"app{i}").get("phase") == "Succeeded" for i in range(count)),
        300,
    )
    calls, reconciles = live.since(before)
    if reconciles < count:
        fail(f"{count} Releases succeeded in {reconciles} reconciles: the count is not kept")
    print(f"{count} first releases at once")
    print(
        f"  applied in {applied - started:.1f}s (the API's schema and CEL admission), "
        f"all Succeeded {elapsed:.1f}s later; reconciles {reconciles}; "
        f"{calls / reconciles:.1f} API calls per reconcile"
    )


def main() -> int:
    options = parser(__doc__).parse_args()
    size = SMOKE if options.smoke else FULL
    bench_decide(size)
    bench_live(size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
