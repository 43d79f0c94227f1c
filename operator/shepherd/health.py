"""The liveness and readiness endpoints of `shepherd run`, served by the operator itself.

Kopf's own liveness endpoint lives only while Kopf runs, and with leader election a standby does not run
Kopf. Served here, both answer from the operator's event loop for its whole life: liveness answers 200 as
long as the loop does (Kopf's endpoint, without probe handlers, tells no more); readiness answers 200 or 503
as `ready()` says.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp.web


@dataclass(frozen=True)
class Readiness:
    ready: bool
    message: str


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
        self, liveness: Endpoint | None, readiness: Endpoint | None, ready: Callable[[], Readiness]
    ) -> None:
        self._routes: dict[tuple[str, int], list[aiohttp.web.RouteDef]] = {}
        if liveness is not None:
            self._route(liveness, self._alive)
        if readiness is not None:
            self._route(readiness, self._ready)
        self._check = ready
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

    async def _alive(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"alive": True})

    async def _ready(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        readiness = self._check()
        body = {"ready": readiness.ready, "message": readiness.message}
        return aiohttp.web.json_response(body, status=200 if readiness.ready else 503)
