"""The liveness and readiness endpoints of `shepherd run`, served by the operator itself.

Kopf's own liveness endpoint lives only while Kopf runs, and with leader election a standby does not run
Kopf. Served here, both answer from the operator's event loop for its whole life, 200 or 503 as their
checks say: readiness turns 503 while the operator cannot act on a current view (starting, a watch failing
for longer than the unready limit, no contact with the API server); liveness only past the longer limit,
so that the kubelet restarts a pod whose watches do not recover, and a standby acts.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp.web


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str


Check = Callable[[], Verdict]


def always_alive() -> Verdict:
    return Verdict(True, "alive")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """`http://HOST:PORT/PATH`, as Kopf's --liveness takes it."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"{url!r} is not an endpoint such as http://0.0.0.0:8080/healthz")
        return cls(parts.hostname, parts.port, parts.path or "/")


class HealthServer:
    """One HTTP server per distinct host and port of the endpoints."""

    def __init__(
        self,
        liveness: Endpoint | None,
        readiness: Endpoint | None,
        ready: Check,
        alive: Check = always_alive,
    ) -> None:
        self._routes: dict[tuple[str, int], list[aiohttp.web.RouteDef]] = {}
        if liveness is not None:
            self._route(liveness, answer(alive, "alive"))
        if readiness is not None:
            self._route(readiness, answer(ready, "ready"))
        self._runners: list[aiohttp.web.AppRunner] = []

    async def start(self) -> None:
        for (host, port), routes in self._routes.items():
            app = aiohttp.web.Application()
            app.add_routes(routes)
            runner = aiohttp.web.AppRunner(app, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            await aiohttp.web.TCPSite(runner, host, port).start()

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    def _route(
        self, endpoint: Endpoint, handler: Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.Response]]
    ) -> None:
        routes = self._routes.setdefault((endpoint.host, endpoint.port), [])
        routes.append(aiohttp.web.get(endpoint.path, handler))


def answer(check: Check, name: str) -> Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.Response]]:
    """A handler answering `check`'s verdict: 200 or 503, with a body `{name: bool, "message": ...}`."""

    async def handle(_request: aiohttp.web.Request) -> aiohttp.web.Response:
        verdict = check()
        body = {name: verdict.ok, "message": verdict.message}
        return aiohttp.web.json_response(body, status=200 if verdict.ok else 503)

    return handle
