"""A Release that is gone is forgotten everywhere at once, however it went: its deletion on the watch, its
absence from a relist (a deletion the watch missed), or its own pass finding it gone. Nothing kept for it
stays: the cache's copy, the scheduler's entry, what it waits for and who waits for it, its routes, its own
writes, its parsed revisions, and its metric series (/metrics no longer names it)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import kubernetes
import pytest
from prometheus_client import generate_latest
from watchserver import WatchServer, eventually

from shepherd.cache import Cache
from shepherd.core.workloads import INSTANCE_LABEL
from shepherd.handlers import Runtime
from shepherd.informers import Store
from shepherd.kube import KubeAPI, ReleaseKey
from shepherd.telemetry import Observed

SHOP, CART = ReleaseKey("prod", "shop"), ReleaseKey("prod", "cart")
ROUTE = ("prod", "shop-route")


def release(key: ReleaseKey, version: int, generation: int = 1) -> dict[str, Any]:
    meta = {
        "name": key.name,
        "namespace": key.namespace,
        "uid": f"uid-{key.name}",
        "resourceVersion": str(version),
        "generation": generation,
    }
    return {"metadata": meta, "spec": {"version": "1.0.0"}}


def revision_record(key: ReleaseKey, version: int) -> dict[str, Any]:
    meta = {
        "name": f"{key.name}-1",
        "namespace": key.namespace,
        "resourceVersion": str(version),
        "labels": {INSTANCE_LABEL: key.name},
        "ownerReferences": [{"kind": "Release", "name": key.name, "uid": f"uid-{key.name}"}],
    }
    return {"metadata": meta, "revision": 1, "data": {"version": "1.0.0", "components": []}}


def new_runtime(api_url: str = "http://127.0.0.1:9", cache: Cache | None = None) -> Runtime:
    configuration = kubernetes.client.Configuration()
    configuration.host = api_url  # by default, nowhere: these Runtimes' passes make no request
    return Runtime(api=KubeAPI(configuration), resync_seconds=30, cache=cache or Cache())


def kept_for(runtime: Runtime, key: ReleaseKey) -> dict[str, object]:
    """Every structure that still mentions `key`, with what it holds for it."""
    mentions: dict[str, object] = {
        "cache": runtime.cache.release(key),
        "scheduler": key in runtime.scheduler,
        "seen": runtime._seen.get(key),
        "own writes": runtime.own_writes.get(key),
        "waits for": runtime._waits_for.get(key),
        "dependents (depended on)": runtime._dependents.get(key),
        "dependents (as dependent)": [k for k, keys in runtime._dependents.items() if key in keys],
        "routes": [route for route, keys in runtime._routed.items() if key in keys],
        "parsed revisions": runtime.cache._parsed.get(key),
        "metrics": [line for line in metrics_text(runtime).splitlines() if f'release="{key.name}"' in line],
    }
    return {what: held for what, held in mentions.items() if held}


def metrics_text(runtime: Runtime) -> str:
    return generate_latest(runtime.metrics.registry).decode()


def known(runtime: Runtime, key: ReleaseKey, version: int) -> None:
    """What a Release's passes leave behind: all of it, for `kept_for` to find."""
    runtime.cache.releases.put(release(key, version))
    runtime.release_event(None, release(key, version))
    runtime.wrote(key, str(version + 1))
    runtime.cache.revisions.put(revision_record(key, version))
    assert runtime.cache.recorded_revisions(key, f"uid-{key.name}")
    runtime.metrics.record(
        key.namespace,
        key.name,
        Observed(
            phase="Baking",
            entered=("Baking",),
            revisions_started=1,
            rollbacks=("AnalysisFailed",),
            rollout_seconds=(("Succeeded", 30.0),),
            lead_time_seconds=(60.0,),
            restore_seconds=(5.0,),
            measurements=(("errors", "Successful"),),
            latest_values={("errors", "canary"): 0.01},
        ),
    )
    runtime.metrics.notified(key.namespace, key.name, "delivered")


def test_a_deleted_release_is_forgotten_everywhere_and_the_others_kept() -> None:
    runtime = new_runtime()
    known(runtime, SHOP, 10)
    known(runtime, CART, 20)
    runtime.depend(SHOP, (("prod", "cart"),), (ROUTE,))
    runtime.depend(CART, (("prod", "shop"),))
    assert set(kept_for(runtime, SHOP)) == {
        "cache",
        "scheduler",
        "seen",
        "own writes",
        "waits for",
        "dependents (depended on)",
        "dependents (as dependent)",
        "routes",
        "parsed revisions",
        "metrics",
    }, "the test sees every structure"
    cart_before = kept_for(runtime, CART)

    runtime.cache.releases.remove(release(SHOP, 12))  # as the informer does with the DELETED event
    runtime.release_event(release(SHOP, 10), None)

    assert kept_for(runtime, SHOP) == {}
    # Of cart's, only what named shop went: that shop waited for it, and cart's place among shop's
    # dependents (cart is woken, and names shop again on that pass, as it still waits for it).
    gone = {"dependents (depended on)", "dependents (as dependent)"}
    assert kept_for(runtime, CART) == {what: held for what, held in cart_before.items() if what not in gone}
    assert runtime._waits_for[CART] == ((SHOP,), ())


def test_a_pass_that_finds_its_release_gone_forgets_it() -> None:
    async def story() -> None:
        server = WatchServer("/apis/shepherd.dev/v1alpha1", "releases")  # serves no Release: 404
        async with server.running():
            runtime = new_runtime(server.url)
            known(runtime, SHOP, 10)
            runtime.depend(SHOP, (("prod", "cart"),), (ROUTE,))
            # Its status write was refused 404, so its next pass reads it afresh: gone.
            assert await runtime.reconcile_once(SHOP, fresh=True) is None
            assert kept_for(runtime, SHOP) == {}
            runtime.api.close()

    asyncio.run(story())


@asynccontextmanager
async def watching(server: WatchServer, runtime: Runtime) -> AsyncIterator[None]:
    """The runtime's cache fed by the server's Releases (the other resources it watches are not served)."""
    connection = runtime.cache.watch(
        server.configuration(), (), runtime.wakes(), release_changed=runtime.release_event
    )
    synced = asyncio.Event()
    running = asyncio.create_task(runtime.cache.run(synced))
    try:
        await asyncio.wait_for(synced.wait(), 10)
        yield
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await connection.close()


def test_a_release_missing_from_a_relist_is_forgotten() -> None:
    async def story() -> None:
        server = WatchServer("/apis/shepherd.dev/v1alpha1", "releases")
        async with server.running():
            for key in (SHOP, CART):
                await server.put(key.name, key.namespace, {"generation": 1})
            runtime = new_runtime()
            async with watching(server, runtime):
                await eventually(lambda: SHOP in runtime.scheduler and CART in runtime.scheduler, "both")
                runtime.metrics.record("prod", "shop", Observed(phase="Succeeded"))
                assert 'release="shop"' in metrics_text(runtime)
                # Deleted while the watch was down, and the events since compacted: the informer must list.
                del server.objects[("prod", "shop")]
                await server.compact()
                await eventually(lambda: SHOP not in runtime.scheduler, "shop forgotten")
                assert kept_for(runtime, SHOP) == {}
                assert 'release="shop"' not in metrics_text(runtime)
                assert CART in runtime.scheduler and runtime.cache.release(CART) is not None

    asyncio.run(story())


def test_each_change_of_a_release_wakes_it_once_and_the_echo_of_its_own_write_not_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def story() -> None:
        server = WatchServer("/apis/shepherd.dev/v1alpha1", "releases")
        async with server.running():
            await server.put("shop", "prod", {"generation": 1})
            runtime = new_runtime()
            woken: list[tuple[ReleaseKey, bool]] = []
            monkeypatch.setattr(
                runtime.scheduler, "wake", lambda key, changed=False: woken.append((key, changed))
            )
            async with watching(server, runtime):
                assert woken[0] == (SHOP, True), "first seen: a change"
                woken.clear()  # and the wake of all that follows the first list
                # The operator's own status write: its answer goes to the cache and its version is noted.
                written = await server.put("shop", "prod", {"generation": 1}, status={"phase": "Progressing"})
                runtime.cache.releases.put(written)
                runtime.wrote(SHOP, written["metadata"]["resourceVersion"])
                await server.put("shop", "prod", {"generation": 2})  # a person's change, after it
                await eventually(lambda: woken, "the person's change, which came after the echo")
                assert woken == [(SHOP, True)], "the echo woke nothing; the change, once"

    asyncio.run(story())


def test_churn_leaves_nothing_behind() -> None:
    now = [0.0]

    async def story() -> None:
        server = WatchServer("/apis/shepherd.dev/v1alpha1", "releases")
        async with server.running():
            await server.put("steady", "prod", {"generation": 1})
            cache = Cache(releases=Store(clock=lambda: now[0]))
            runtime = new_runtime(cache=cache)
            async with watching(server, runtime):
                await eventually(lambda: ReleaseKey("prod", "steady") in runtime.scheduler, "the steady one")
                before = sizes(runtime)
                for cycle in range(2):
                    names = [f"churn-{cycle}-{i}" for i in range(1000)]
                    last = ReleaseKey("prod", names[-1])
                    for name in names:
                        await server.put(name, "prod", {"generation": 1})
                    await eventually(functools.partial(runtime.scheduler.__contains__, last), "all created")
                    for name in names:
                        key = ReleaseKey("prod", name)
                        runtime.metrics.record("prod", name, Observed(phase="Pending", entered=("Pending",)))
                        runtime.depend(key, (("prod", "steady"),), (("prod", f"{name}-route"),))
                        runtime.wrote(key, "1")
                    for name in names:
                        await server.delete(name, "prod")
                    await eventually(lambda: len(list(runtime.scheduler)) == 1, "all deleted")
                    now[0] += 60.0
                assert cache.releases.sizes()["deletions"] == 2000, "deletions remembered for a while"
                now[0] += 300.0
                await server.bookmark()
                await eventually(lambda: cache.releases.sizes()["deletions"] == 0, "old deletions dropped")
                assert sizes(runtime) == before

    asyncio.run(story())


def sizes(runtime: Runtime) -> dict[str, int]:
    return {
        **{f"releases {what}": n for what, n in runtime.cache.releases.sizes().items()},
        "scheduler": len(list(runtime.scheduler)),
        "seen": len(runtime._seen),
        "own writes": len(runtime.own_writes),
        "waits for": len(runtime._waits_for),
        "dependents": len(runtime._dependents),
        "routes": len(runtime._routed),
        "parsed": len(runtime.cache._parsed),
        "metrics lines": len(metrics_text(runtime).splitlines()),
    }
