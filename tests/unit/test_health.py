"""/readyz and /healthz follow the informers: 503 with the reason past the unready limit, /healthz too past
the unhealthy one, and both 200 again once the informer lists, by itself."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from watchserver import WatchServer, eventually

from helpers import free_port
from shepherd.cache import Cache
from shepherd.health import Endpoint, HealthServer, Verdict
from shepherd.informers import Connection, Informer, Resource, Store
from shepherd.limits import Limits
from shepherd.runner import acting, alive

JOBS = Resource("batch", "v1", "jobs")
LIMITS = Limits(unready_after_seconds=10, unhealthy_after_seconds=30)


async def answers(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json()


def test_a_check_is_answered_200_or_503_with_its_message() -> None:
    verdict = Verdict(True, "watching Releases")

    async def story() -> None:
        port = free_port()
        health = HealthServer(
            Endpoint("127.0.0.1", port, "/healthz"), Endpoint("127.0.0.1", port, "/readyz"), lambda: verdict
        )
        await health.start()
        try:
            async with aiohttp.ClientSession() as session:
                assert await answers(session, f"http://127.0.0.1:{port}/readyz") == (
                    200,
                    {"ready": True, "message": "watching Releases"},
                )
                nonlocal verdict
                verdict = Verdict(False, "starting")
                assert await answers(session, f"http://127.0.0.1:{port}/readyz") == (
                    503,
                    {"ready": False, "message": "starting"},
                )
                assert await answers(session, f"http://127.0.0.1:{port}/healthz") == (
                    200,
                    {"alive": True, "message": "alive"},
                ), "without a check of its own, alive while the loop answers"
        finally:
            await health.stop()

    asyncio.run(story())


def test_readiness_and_liveness_fail_past_their_limits_and_recover_when_the_informer_lists() -> None:
    now = [1000.0]

    async def story() -> None:
        server = WatchServer("/apis/batch/v1", "jobs")
        async with server.running():
            await watched(server)

    async def watched(server: WatchServer) -> None:
        connection = Connection(server.configuration())
        cache = Cache(limits=LIMITS)
        informer = Informer(connection, JOBS, Store(), "shop", clock=lambda: now[0])
        cache.informers = [informer]
        port = free_port()
        health = HealthServer(
            Endpoint("127.0.0.1", port, "/healthz"),
            Endpoint("127.0.0.1", port, "/readyz"),
            lambda: acting(cache, LIMITS, informer.synced.is_set()),
            lambda: alive(cache, LIMITS),
        )
        ready, live = f"http://127.0.0.1:{port}/readyz", f"http://127.0.0.1:{port}/healthz"
        async with aiohttp.ClientSession() as session:
            await health.start()
            running = asyncio.create_task(cache.run())
            try:
                await eventually(informer.synced.is_set, "the first list")
                assert (await answers(session, ready))[0] == 200
                server.refusing = 403  # list and watch forbidden from now on
                await server.compact()  # the open watch ends: the informer must list again
                await eventually(lambda: "HTTP 403" in informer.last_error, "the refused list")
                began = informer.failing_since
                assert began is not None

                now[0] = began + 9
                assert (await answers(session, ready))[0] == 200, "within the unready limit"
                now[0] = began + 11
                status, body = await answers(session, ready)
                assert status == 503
                assert body["message"].startswith(
                    "jobs in shop: no successful list or watch for 11s: HTTP 403"
                )
                assert (await answers(session, live))[0] == 200, "within the unhealthy limit"
                now[0] = began + 31
                status, body = await answers(session, live)
                assert (status, body["alive"]) == (503, False)
                assert "jobs in shop" in body["message"] and "forbidden" in body["message"]

                server.refusing = None
                await eventually(lambda: informer.failing_since is None, "a list, once allowed", timeout=40)
                assert (await answers(session, ready)) == (
                    200,
                    {"ready": True, "message": "watching Releases"},
                )
                assert (await answers(session, live)) == (200, {"alive": True, "message": "alive"})
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                await health.stop()
                await connection.close()

    asyncio.run(story())
