"""What a resync of an unchanged Release costs: the CPU of one pass that finds nothing changed.

A Release at rest (Succeeded, its Deployments, revision record and Events as the core left them) is held
in the operator's own watch-fed cache, and passes of the real `reconcile` run over it:
1. the full decision (the spec parsed, observations gathered, the phase machine run, nothing to write),
   as every resync paid before fingerprints;
2. the pass that finds its fingerprint unchanged and nothing due, and returns its last outcome;
3. the same, with 1, 5 and 20 components, and with approval gates and a policy (more to fingerprint).
CPU time per pass (process time, p50/p99 of batches), and the ratio. Target: under 50 us per skipped pass.

With --smoke: fewer passes.

Run: make bench   (or .venv/bin/python bench/resync_cost.py [--smoke])
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime

import kubernetes

from benchlib import REPO, fail, parser, spread
from shepherd.cache import Cache
from shepherd.core.gates import Approval
from shepherd.kube import KubeAPI, ReleaseKey
from shepherd.reconcile import Outcome, ParsedSpecs, reconcile

sys.path.insert(0, str(REPO / "tests" / "unit"))

from simulation import World, container, release_spec

KEY = ReleaseKey("prod", "shop")


def resting_cache(components: int, gated: bool) -> tuple[Cache, datetime]:
    """The cache as the watches fill it for one Release that has succeeded and has nothing left to do."""
    spec = release_spec("1.0.0")
    spec["components"] = [
        {"name": f"c{i}", "replicas": 2, "template": container(f"shop/c{i}:1.0.0")} for i in range(components)
    ]
    if gated:
        spec["gates"] = [
            {"name": "two", "approval": {"count": 2}},
            {
                "name": "hours",
                "window": {"days": ["Mon"], "start": "09:00", "end": "17:00", "timeZone": "UTC"},
            },
        ]
    world = World(spec)
    world.approvals = [Approval(f"a{n}", KEY.name, 1, person, world.now) for n, person in enumerate("ab")]
    world.run_until("Succeeded")
    cache = Cache()
    version = iter(range(1, 1_000_000))
    meta = {"name": KEY.name, "namespace": KEY.namespace, "uid": "uid-1", "generation": world.generation}
    meta["resourceVersion"] = str(next(version))
    status = {k: v for k, v in world.status.items() if v is not None}  # as a merge patch leaves it
    cache.releases.put({"metadata": meta, "spec": world.spec, "status": status})
    for deployment in world.deployments.values():
        deployment["metadata"]["resourceVersion"] = str(next(version))
        cache.deployments.put(deployment)
    for record in world.records.values():
        record["metadata"]["resourceVersion"] = str(next(version))
        cache.revisions.put(record)
    cache.namespaces.put({"metadata": {"name": "prod", "resourceVersion": "7", "labels": {"tier": "prod"}}})
    if gated:
        cache.policies.put(
            {
                "metadata": {"name": "prod", "resourceVersion": "8"},
                "spec": {"namespaceSelector": {"matchLabels": {"tier": "prod"}}},
            }
        )
    return cache, world.now


def passes(
    cache: Cache, api: KubeAPI, now: datetime, previous: Outcome | None, count: int, batch: int
) -> list[float]:
    """CPU microseconds per pass, one figure per batch of `batch` passes."""

    async def run() -> list[float]:
        figures = []
        for _ in range(count // batch):
            started = time.process_time()
            for _ in range(batch):
                outcome = await reconcile(
                    api, cache, KEY, lambda: now, previous=previous, specs=ParsedSpecs()
                )
                if outcome is None or (previous is not None and outcome is not previous):
                    fail("a pass over an unchanged Release decided again")
            figures.append((time.process_time() - started) / batch * 1e6)
        return figures

    return asyncio.run(run())


def main() -> int:
    options = parser(__doc__).parse_args()
    count, batch = (200, 20) if options.smoke else (20_000, 200)
    configuration = kubernetes.client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # nothing is asked of the API server: a call here would fail
    api = KubeAPI(configuration, request_seconds=1)
    print(f"one resync of an unchanged Release, CPU per pass ({count} passes)")
    for components, gated in ((1, False), (5, False), (20, False), (5, True)):
        cache, now = resting_cache(components, gated)
        full = spread(passes(cache, api, now, None, max(batch, count // 20), batch), "full decision")
        previous = asyncio.run(reconcile(api, cache, KEY, lambda at=now: at))
        if previous is None or previous.fingerprint is None:
            fail("the resting Release has no fingerprint")
        skipped = spread(passes(cache, api, now, previous, count, batch), "skipped pass")
        label = f"{components} components" + (", gates and a policy" if gated else "")
        print(
            f"  {label:32} full decision p50 {full['p50']:7.0f} us  |  unchanged p50 {skipped['p50']:5.1f} us"
            f"  p99 {skipped['p99']:5.1f} us  ({full['p50'] / skipped['p50']:.0f}x less)"
        )
    api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
