"""A fault-injecting reverse proxy between a client (the operator) and the real API server, for tests.

The proxy listens on 127.0.0.1 over plain HTTP and forwards every request to kube-apiserver over TLS
(verified with the control plane's CA), passing the client's Authorization header through: the operator
still authenticates with its ServiceAccount token and the real RBAC still decides. Watch responses are
streamed as they come.

Rules inject faults by verb (GET, LIST, WATCH, POST, PUT, PATCH, DELETE; WATCH and LIST are told apart from
GET by the path and the `watch` query), an optional path regex and a share of the matching requests (drawn
from a seeded random generator, or every n-th of them): an answer of the proxy's own (500, 429 with
Retry-After, 409, each with a Kubernetes Status body) instead of the server's, an added delay, a watch
stream cut some seconds after it began, a hang (the request accepted and never answered nor closed: never
sent to the server, or sent and its answer withheld, so the server applied a write its client never hears
of), a silent watch (open, and nothing of it forwarded: no event, no bookmark, no end), or an expired one
(answered 410 in its stream, as when the version it resumes from is compacted away). Every request is
counted by verb and path, and a hook can run right after the server answered the k-th write (or right before
the k-th write is sent): a test kills the operator there. What a delay, a hang or a silent watch holds is
let go when the proxy stops: its connection is closed and the proxy's thread ends.

Any plain HTTP server can stand behind it too (a slow Prometheus: `FaultProxy(url, None)` and
`fault(delay=60)`): the verbs then mean little, and the path regex chooses.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs

import aiohttp
import yaml
from aiohttp import web

VERBS = ("GET", "LIST", "WATCH", "POST", "PUT", "PATCH", "DELETE")
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A hang "before" the server: never forwarded; "after" it: forwarded, applied, its answer never given.
Hang = Literal["before", "after"]
UNANSWERED = 0  # the status an exchange records when its client got no answer at all
STOP_GRACE_SECONDS = 5.0  # handlers still running when the proxy stops (none should be) get this long
# Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1), and those aiohttp sets.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
REASONS = {
    409: (
        "Conflict",
        "Operation cannot be fulfilled: the object has been modified; please apply your "
        "changes to the latest version and try again",
    ),
    410: ("Expired", "too old resource version"),
    429: ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
    500: ("InternalError", "Internal error occurred: injected: etcdserver: leader changed"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
}


def verb_of(method: str, path: str, query: str) -> str:
    """The Kubernetes verb of a request: GET/LIST/WATCH for reads, else the method."""
    method = method.upper()
    if method != "GET":
        return method
    if parse_qs(query).get("watch", ["false"])[-1].lower() in ("true", "1"):
        return "WATCH"
    return "LIST" if is_collection(path) else "GET"


def is_collection(path: str) -> bool:
    """Whether a resource path names a collection (…/deployments) rather than one object (…/shop-api)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return False  # /version, /openapi/..., /apis: discovery and other non-resource paths
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    return len(rest) == 1


def status_body(code: int, message: str | None = None, retry_after: int | None = None) -> dict[str, Any]:
    """A Kubernetes Status, as kube-apiserver answers a failed request."""
    reason, default = REASONS.get(code, ("InternalError", f"injected HTTP {code}"))
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message or default,
        "reason": reason,
        "code": code,
    }
    if retry_after is not None:
        body["details"] = {"retryAfterSeconds": retry_after}
    return body


@dataclass
class Fault:
    """What to do to a share of the requests matching `verbs` (empty: any) and `path` (a regex searched in
    the path; None: any). `status` answers in the server's stead; `delay` holds the request that long
    first; `cut_after` cuts a watch stream that many seconds after it began (a WATCH rule); `hang` holds
    the request unanswered until the proxy stops ("before": never sent to the server; "after": the server
    answered, the answer is withheld); `silent` keeps a watch open forwarding nothing (a WATCH rule);
    `expired` answers a watch as the server does once the version it resumes from is compacted away: 200,
    then one ERROR event with a 410 Status (a WATCH rule: its client must list again); `every` acts on
    every n-th matching request (the n-th, the 2n-th, ...) rather than on a random `share` of them, so that
    a run of a given number of requests meets a known number of faults; `times` limits how many requests
    the rule acts on."""

    verbs: frozenset[str] = frozenset()
    path: str | None = None
    share: float = 1.0
    status: int | None = None
    delay: float = 0.0
    cut_after: float | None = None
    retry_after: int = 1
    times: int | None = None  # at most this many requests, then the rule is spent
    hang: Hang | None = None
    silent: bool = False
    expired: bool = False
    every: int | None = None
    applied: int = 0
    matched: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.verbs) - set(VERBS)
        if unknown:
            raise ValueError(f"unknown verbs {sorted(unknown)}; known: {', '.join(VERBS)}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"share must be within 0..1, not {self.share}")
        if self.every is not None and (self.every < 1 or self.share != 1.0):
            raise ValueError(f"every must be 1 or more, and comes instead of a share, not {self.every}")
        if self.hang not in (None, "before", "after"):
            raise ValueError(f"hang must be before or after (the server), not {self.hang!r}")
        if self.silent and self.verbs != {"WATCH"}:
            raise ValueError("a silent fault keeps a watch open: its only verb is WATCH")
        if self.expired and self.verbs != {"WATCH"}:
            raise ValueError("an expired fault answers a watch: its only verb is WATCH")

    def matches(self, verb: str, path: str) -> bool:
        return (not self.verbs or verb in self.verbs) and (
            self.path is None or re.search(self.path, path) is not None
        )


def fault(
    *verbs: str,
    path: str | None = None,
    share: float = 1.0,
    status: int | None = None,
    delay: float = 0.0,
    cut_after: float | None = None,
    times: int | None = None,
    hang: Hang | None = None,
    silent: bool = False,
    expired: bool = False,
    every: int | None = None,
) -> Fault:
    return Fault(
        frozenset(verbs),
        path,
        share,
        status,
        delay,
        cut_after,
        times=times,
        hang=hang,
        silent=silent,
        expired=expired,
        every=every,
    )


@dataclass(frozen=True)
class Exchange:
    """One request as the proxy saw it: its verb, path, the status the client got (UNANSWERED: none, it
    hangs) and when (time.monotonic()) it was answered, or, for one never answered, when it came."""

    verb: str
    path: str
    status: int
    injected: bool
    at: float = field(default_factory=time.monotonic, compare=False)


@dataclass
class _Watch:
    """A watch stream the proxy is forwarding (or holding silent), and what closes it."""

    transport: asyncio.BaseTransport | None
    path: str
    silence: asyncio.Future[None] | None = None  # a silent watch's wait, ended by a cut
    upstream: aiohttp.ClientResponse | None = None  # the server's watch it forwards, closed by a cut


@dataclass
class KillPoint:
    """Run `hook` when the `k`-th counted write has been answered by the server, or before it is sent."""

    k: int
    hook: Callable[[], None]
    before: bool = False
    fired: threading.Event = field(default_factory=threading.Event)


class FaultProxy:
    """The proxy, in a thread of its own with its own event loop; a context manager.

    `writes` is a regex: only writes (POST/PUT/PATCH/DELETE) whose path it matches are numbered for the
    kill point (e.g. to leave out the leader's Lease renewals, which come on a timer)."""

    def __init__(
        self, upstream: str, ca_file: Path | None, *, seed: int = 0, writes: str | None = None
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_file = ca_file
        self.writes_pattern = writes
        self.port = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._kill: KillPoint | None = None
        self._write_count = 0
        self.exchanges: list[Exchange] = []
        self.written: list[tuple[int, str, str, int]] = []  # counted writes: number, verb, path, status
        self.watches_cut = 0
        self._open_watches: dict[web.StreamResponse, _Watch] = {}
        self._held: set[asyncio.Future[None]] = set()  # requests delayed or hung now
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @classmethod
    def for_control_plane(cls, control_plane: Any, **options: Any) -> FaultProxy:
        """In front of a `shepherd.lab.controlplane.ControlPlane`."""
        return cls(control_plane.url, control_plane.pki / "ca.crt", **options)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- configuration, from any thread

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear(self) -> None:
        """No more faults and no kill point; the counts stay."""
        with self._lock:
            self._faults.clear()
            self._kill = None

    def kill_at(self, k: int, hook: Callable[[], None], *, before: bool = False) -> KillPoint:
        """Run `hook` once the k-th write from now on has been answered (`before`: instead of sending it)."""
        point = KillPoint(k, hook, before)
        with self._lock:
            self._write_count = 0
            self.written.clear()
            self._kill = point
        return point

    def reset_counts(self) -> None:
        with self._lock:
            self.exchanges.clear()
            self.written.clear()
            self._write_count = 0
            self.watches_cut = 0

    def open_watches(self) -> int:
        """How many watch streams are open through the proxy now."""
        return len(self._open_watches)

    def cut_watches(self, path: str | None = None) -> int:
        """Cut every watch stream open now (whose path the regex `path` matches); returns how many."""
        loop = self._loop
        if loop is None:
            return 0
        return asyncio.run_coroutine_threadsafe(self._cut_all(path), loop).result(timeout=10)

    def release(self) -> int:
        """Let go of every request delayed or hung now: its connection is closed unanswered. Returns how
        many (the proxy does this when it stops)."""
        loop = self._loop
        if loop is None:
            return 0
        return asyncio.run_coroutine_threadsafe(self._release_all(), loop).result(timeout=10)

    # --- what happened

    def counts(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter((e.verb, e.path) for e in self.exchanges)

    def count(self, verb: str, path: str | None = None, *, injected: bool | None = None) -> int:
        with self._lock:
            return sum(
                1
                for e in self.exchanges
                if e.verb == verb
                and (path is None or re.search(path, e.path))
                and (injected is None or e.injected == injected)
            )

    def injected(self) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.injected]

    def answered(
        self, path: str, *, verbs: Iterable[str] = WRITE_VERBS, after: float = 0.0
    ) -> list[Exchange]:
        """Requests of `verbs` whose path the regex `path` matches that the server answered with success
        after `after` (time.monotonic()): e.g. a Release moving again after one of its writes hung."""
        chosen = frozenset(verbs)
        with self._lock:
            return [
                e
                for e in self.exchanges
                if e.at > after
                and e.verb in chosen
                and 200 <= e.status < 300
                and not e.injected
                and re.search(path, e.path)
            ]

    def hung(self) -> list[Exchange]:
        """The requests that got no answer: hung, or held when the proxy let them go."""
        with self._lock:
            return [e for e in self.exchanges if e.status == UNANSWERED]

    @property
    def holding(self) -> int:
        """Requests delayed or hung right now, and silent watches open."""
        with self._lock:
            return len(self._held)

    @property
    def write_count(self) -> int:
        """Counted writes the server answered since the last reset (or kill point)."""
        with self._lock:
            return len(self.written)

    # --- the thread

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None or not self.port:
            raise RuntimeError(f"the fault proxy did not start: {self._error}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():
                raise RuntimeError("the fault proxy's thread did not end within 30s of its stop")

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported by __enter__ when it happens while starting
            self._error = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # Plain HTTP upstreams (a ca_file of None) never use it.
        tls = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        connector = aiohttp.TCPConnector(ssl=tls, limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            self._session = session
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(
                app, handle_signals=False, access_log=None, shutdown_timeout=STOP_GRACE_SECONDS
            )
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self._release_all()
                await self._cut_all()
                await runner.cleanup()

    async def _cut_all(self, path: str | None = None) -> int:
        streams = [s for s, w in self._open_watches.items() if path is None or re.search(path, w.path)]
        for stream in streams:
            self._cut(stream)
        return len(streams)

    def _cut(self, stream: web.StreamResponse) -> None:
        """Close the connection under a watch mid-stream: the client sees it end without a last chunk."""
        if stream in self._open_watches:
            watch = self._open_watches.pop(stream)
            with self._lock:
                self.watches_cut += 1
            if watch.silence is not None and not watch.silence.done():
                watch.silence.set_result(None)
                with self._lock:
                    self._held.discard(watch.silence)  # at once: its handler lets go of it a turn later
            if watch.upstream is not None:  # its handler waits on the server's next event no more
                watch.upstream.close()
            if watch.transport is not None:
                watch.transport.close()

    async def _release_all(self) -> int:
        with self._lock:
            held, self._held = self._held, set()
        for waiter in held:
            if not waiter.done():
                waiter.set_result(None)
        return len(held)

    async def _hold(self, seconds: float | None, waiter: asyncio.Future[None] | None = None) -> bool:
        """Hold a request `seconds` (None: until let go); True when let go first: its connection is to be
        closed. Nothing but a future: a thousand hung requests cost no thread."""
        waiter = waiter or asyncio.get_running_loop().create_future()
        with self._lock:
            self._held.add(waiter)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=seconds)
        finally:
            with self._lock:
                self._held.discard(waiter)
        return bool(done)

    def _drop(self, request: web.Request, verb: str, path: str, came: float | None) -> web.Response:
        """Close a held request's connection with no answer (the response returned is never sent);
        recorded unless already (`came` None)."""
        if came is not None:
            self._record(verb, path, UNANSWERED, True, came)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=503)

    async def _hang(self, request: web.Request, verb: str, path: str, came: float) -> web.Response:
        self._record(verb, path, UNANSWERED, True, came)
        await self._hold(None)
        return self._drop(request, verb, path, None)

    def _choose(self, verb: str, path: str) -> list[Fault]:
        with self._lock:
            chosen = []
            for f in self._faults:
                if not f.matches(verb, path) or (f.times is not None and f.applied >= f.times):
                    continue
                f.matched += 1
                if f.matched % f.every == 0 if f.every is not None else self._random.random() < f.share:
                    f.applied += 1
                    chosen.append(f)
            return chosen

    def _record(self, verb: str, path: str, status: int, injected: bool, at: float | None = None) -> None:
        with self._lock:
            self.exchanges.append(Exchange(verb, path, status, injected, at or time.monotonic()))

    def _number_write(self, verb: str, path: str) -> tuple[int, KillPoint | None]:
        """The write's number (0: not counted) and the kill point it reaches, if any."""
        if verb not in WRITE_VERBS or (
            self.writes_pattern is not None and re.search(self.writes_pattern, path) is None
        ):
            return 0, None
        with self._lock:
            self._write_count += 1
            point = self._kill
            if point is not None and point.k == self._write_count and not point.fired.is_set():
                return self._write_count, point
            return self._write_count, None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        came = time.monotonic()
        path = request.path
        verb = verb_of(request.method, path, request.query_string)
        chosen = self._choose(verb, path)
        delay = max((f.delay for f in chosen), default=0.0)
        if delay and await self._hold(delay):
            return self._drop(request, verb, path, came)
        hang = next((f.hang for f in chosen if f.hang is not None), None)
        if hang == "before":
            return await self._hang(request, verb, path, came)
        failing = next((f for f in chosen if f.status is not None), None)
        if failing is not None and failing.status is not None:
            return self._injected(verb, path, failing)
        if any(f.expired for f in chosen):
            return await self._expired(request, verb, path)
        body = await request.read()
        number, point = self._number_write(verb, path)
        if point is not None and point.before:
            self._fire(point)
            self._record(verb, path, 503, True)
            return web.json_response(status_body(503), status=503)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = self.upstream + request.rel_url.raw_path_qs
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                # A body without a Content-Type goes on without one (kube-apiserver reads it as JSON).
                skip_auto_headers=() if "Content-Type" in request.headers else ("Content-Type",),
            )
        except aiohttp.ClientError as error:
            self._record(verb, path, 502, True)
            return web.json_response(status_body(503, f"proxy: {error}"), status=503)
        async with upstream:
            response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            if verb == "WATCH" and upstream.status == 200:
                silent = any(f.silent for f in chosen)
                self._record(verb, path, upstream.status, silent)
                if silent:
                    upstream.close()  # the server's watch is let go; its client's is kept, silent
                    return await self._silent(request, path, response_headers)
                cut_after = min((f.cut_after for f in chosen if f.cut_after is not None), default=None)
                return await self._stream(request, path, upstream, response_headers, cut_after)
            payload = await upstream.read()
        if number:
            with self._lock:
                self.written.append((number, verb, path, upstream.status))
        if point is not None:
            self._fire(point)
        if hang == "after":  # the server applied it; its client never hears
            return await self._hang(request, verb, path, came)
        self._record(verb, path, upstream.status, False)
        return web.Response(status=upstream.status, headers=response_headers, body=payload)

    def _fire(self, point: KillPoint) -> None:
        # Synchronously, on the proxy's loop: nothing else passes the proxy until the hook returns.
        point.fired.set()
        point.hook()

    async def _expired(self, request: web.Request, verb: str, path: str) -> web.StreamResponse:
        """A watch from a version compacted away, as kube-apiserver answers it: 200, one ERROR event."""
        self._record(verb, path, 410, True)
        stream = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await stream.prepare(request)
        event = {"type": "ERROR", "object": status_body(410)}
        await stream.write(json.dumps(event).encode() + b"\n")
        await stream.write_eof()
        return stream

    def _injected(self, verb: str, path: str, failing: Fault) -> web.Response:
        assert failing.status is not None
        retry_after = failing.retry_after if failing.status == 429 else None
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._record(verb, path, failing.status, True)
        return web.Response(
            status=failing.status,
            headers=headers,
            text=json.dumps(status_body(failing.status, retry_after=retry_after)),
            content_type="application/json",
        )

    async def _silent(
        self, request: web.Request, path: str, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        """A watch whose client got the server's headers and nothing more, open until it is cut or the
        proxy stops."""
        stream = web.StreamResponse(status=200, headers=headers)
        await stream.prepare(request)
        silence = asyncio.get_running_loop().create_future()
        self._open_watches[stream] = _Watch(request.transport, path, silence)
        try:
            await self._hold(None, silence)
        finally:
            self._open_watches.pop(stream, None)
        if request.transport is not None:
            request.transport.close()
        return stream

    async def _stream(
        self,
        request: web.Request,
        path: str,
        upstream: aiohttp.ClientResponse,
        headers: Mapping[str, str],
        cut_after: float | None,
    ) -> web.StreamResponse:
        stream = web.StreamResponse(status=upstream.status, headers=headers)
        await stream.prepare(request)
        self._open_watches[stream] = _Watch(request.transport, path, upstream=upstream)
        timer = (
            asyncio.get_running_loop().call_later(cut_after, self._cut, stream)
            if cut_after is not None
            else None
        )
        try:
            async for chunk in upstream.content.iter_any():
                if stream not in self._open_watches:
                    break
                await stream.write(chunk)
            if stream in self._open_watches:
                await stream.write_eof()
        except (ConnectionResetError, aiohttp.ClientError, RuntimeError):
            pass  # the client went away, or the watch was cut: nothing more to send
        finally:
            self._open_watches.pop(stream, None)
            if timer is not None:
                timer.cancel()
        return stream


def proxied_kubeconfig(source: Path, target: Path, url: str) -> Path:
    """`source`'s kubeconfig with every cluster's server at `url` (plain HTTP: no CA); users unchanged."""
    config = yaml.safe_load(source.read_text())
    for cluster in config.get("clusters") or []:
        settings = cluster.setdefault("cluster", {})
        settings["server"] = url
        for key in ("certificate-authority", "certificate-authority-data", "tls-server-name"):
            settings.pop(key, None)
    target.write_text(yaml.safe_dump(config))
    return target


def route_through(operator: Any, proxy: FaultProxy) -> Path:
    """Point a `shepherd.lab.cluster.OperatorProcess` at the proxy: its ServiceAccount kubeconfig (made
    now if it does not exist yet) rewritten to the proxy's address, the same token kept."""
    path: Path = operator.kubeconfig
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        operator.control_plane.service_account_kubeconfig(
            operator.chart.namespace, operator.chart.service_account, path
        )
    return proxied_kubeconfig(path, path, proxy.url)


def excluding(*patterns: str) -> str:
    """A path regex matching every path but those the patterns match (for `writes=`)."""
    return "^(?!" + "|".join(f"(?:{p})" for p in patterns) + ")"


LEASES = r"/apis/coordination\.k8s\.io/"


def summary(exchanges: Iterable[Exchange]) -> dict[str, int]:
    """Requests by verb, for a test's message."""
    return dict(Counter(e.verb for e in exchanges))
