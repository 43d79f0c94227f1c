"""A tiny HTTP server that lists and watches one collection the way kube-apiserver answers (a list at a
resourceVersion, then a stream of events after it, 410 once that version is compacted), and can refuse,
fall silent or expire: what an informer is driven through in the unit tests. It serves nothing else of
the Kubernetes API but the read of one object of that collection. And `eventually`, to poll with a
deadline inside the event loop they share.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import kubernetes.client
from aiohttp import web

Json = dict[str, Any]
POLL_INTERVAL = 0.01


async def eventually(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Return once `check()` is truthy; fail if that takes longer than `timeout` seconds (the event loop
    runs meanwhile, the server's and the informer's)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


def status(code: int, message: str) -> Json:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message}


class WatchServer:
    def __init__(self, base: str, plural: str) -> None:
        self.base, self.plural = base, plural  # e.g. "/apis/apps/v1", "deployments"
        self.version = 1
        self.objects: dict[tuple[str, str], Json] = {}
        self.events: list[tuple[int, Json]] = []
        self.compacted = 0  # a watch from a version below this is answered 410
        self.refusing: int | None = None  # answer lists and watches with this status
        self.silent = False  # watches opened from now on say nothing, ever
        self.expiring = False  # watches opened from now on are answered 410, whatever their version
        self.lists = 0
        self.watches = 0
        self.port = 0
        self._news = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> kubernetes.client.Configuration:
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        return configuration

    # --- what happens in the cluster

    async def put(
        self, name: str, namespace: str = "shop", metadata: Json | None = None, **fields: Any
    ) -> Json:
        """Create or change an object: a new version, an ADDED or MODIFIED event."""
        self.version += 1
        kind = "MODIFIED" if (namespace, name) in self.objects else "ADDED"
        meta = {"name": name, "namespace": namespace, "uid": name, **(metadata or {})}
        meta["resourceVersion"] = str(self.version)
        obj = self.objects[(namespace, name)] = {"metadata": meta, **fields}
        await self._publish(kind, obj)
        return obj

    async def delete(self, name: str, namespace: str = "shop") -> None:
        self.version += 1
        obj = self.objects.pop((namespace, name))
        gone = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        await self._publish("DELETED", gone)

    async def bookmark(self) -> None:
        """A BOOKMARK, as the server sends about every minute (at a version other resources moved on)."""
        self.version += 1
        await self._publish("BOOKMARK", {"metadata": {"resourceVersion": str(self.version)}})

    async def compact(self) -> None:
        """Other resources move the version on, and every event so far is compacted away: a watch from an
        older version, open ones included, ends with 410, as the server ends those it cannot serve."""
        self.version += 1
        self.compacted = self.version
        self.events.clear()
        async with self._news:
            self._news.notify_all()

    async def _publish(self, kind: str, obj: Json) -> None:
        self.events.append((self.version, {"type": kind, "object": obj}))
        async with self._news:
            self._news.notify_all()

    # --- the server

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WatchServer]:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        try:
            yield self
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refusing is not None:
            message = f'{self.plural} is forbidden: cannot list resource "{self.plural}"'
            return web.json_response(status(self.refusing, message), status=self.refusing)
        parts = request.path.removeprefix(self.base).strip("/").split("/")
        scope = parts[1] if parts[:1] == ["namespaces"] and len(parts) == 3 else None
        if parts == [self.plural] or (scope is not None and parts[2] == self.plural):
            if request.query.get("watch") in ("1", "true"):
                return await self._watch(request, scope, int(request.query.get("resourceVersion") or 0))
            self.lists += 1
            items = [obj for key, obj in self.objects.items() if scope in (None, key[0])]
            return web.json_response({"metadata": {"resourceVersion": str(self.version)}, "items": items})
        if len(parts) == 4 and parts[0] == "namespaces" and parts[2] == self.plural:
            found = self.objects.get((parts[1], parts[3]))
            if found is not None:
                return web.json_response(found)
        return web.json_response(status(404, "not found"), status=404)

    async def _watch(self, request: web.Request, scope: str | None, since: int) -> web.StreamResponse:
        self.watches += 1
        stream = web.StreamResponse()
        await stream.prepare(request)
        if self.silent:
            await asyncio.Event().wait()  # until the client goes away
        while True:
            async with self._news:
                await self._news.wait_for(functools.partial(self._news_after, since))
            if since < self.compacted or self.expiring:
                gone = {"type": "ERROR", "object": status(410, "too old resource version")}
                await stream.write(json.dumps(gone).encode() + b"\n")
                return stream
            for version, event in self.events[bisect.bisect_right(self.events, since, key=lambda e: e[0]) :]:
                namespace = event["object"]["metadata"].get("namespace")
                if event["type"] == "BOOKMARK" or scope in (None, namespace):
                    await stream.write(json.dumps(event).encode() + b"\n")
                since = version

    def _news_after(self, since: int) -> bool:
        return since < self.compacted or self.expiring or bool(self.events and self.events[-1][0] > since)
