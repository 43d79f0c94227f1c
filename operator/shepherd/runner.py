"""Start the operator: in the foreground (`shepherd run`) or in a thread (the demo, the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

import kopf
import kubernetes.client

from shepherd.cache import Cache
from shepherd.handlers import REGISTRY, Runtime, end_in_order, operator_settings
from shepherd.health import Endpoint, HealthServer, Verdict
from shepherd.kube import KubeAPI
from shepherd.leader import LeaderElection, LeaderElector, LeadershipLost
from shepherd.limits import Limits
from shepherd.sharding import Shard

DEFAULT_RESYNC_SECONDS = 30.0

API_THREADS = 32

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: Collection[str] = ()  # empty: all namespaces
    standalone: bool = False
    liveness_endpoint: str | None = None
    readiness_endpoint: str | None = None
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    metrics_port: int | None = None  # serve /metrics on this port (0: any free port)
    leader_election: LeaderElection | None = None  # None: act at once, as the declared standalone one
    # Act only on this shard's Releases (with leader election, on the shard's own Lease).
    shard: Shard = field(default_factory=Shard)
    limits: Limits = field(default_factory=Limits)


def new_runtime(configuration: kubernetes.client.Configuration, options: OperatorOptions) -> Runtime:
    return Runtime(
        api=KubeAPI(configuration, options.limits.request_seconds),
        resync_seconds=options.resync_seconds,
        shard=options.shard,
        limits=options.limits,
    )


async def run_operator(
    configuration: kubernetes.client.Configuration,
    options: OperatorOptions,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    runtime: Runtime | None = None,
) -> None:
    """Run until `stop_flag` is set or a signal comes; raise LeadershipLost when the lease was lost.

    `ready_flag` is set once the operator is ready: Kopf has started (watching Releases) and the cache has
    listed everything it watches, or, with leader election, this candidate stands by in contact with the
    API server.
    """
    if not (options.standalone or options.leader_election):
        raise ValueError(
            "an operator runs leader-elected (leader_election, --leader-elect) or declared alone "
            "(standalone=True, --standalone), never by Kopf's peering alone: two replicas would act at once"
        )
    # Writes block in threads: enough of them that a slow call never holds another Release's step.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="shepherd-api")
    )
    runtime = runtime or new_runtime(configuration, options)
    if not options.shard.whole:
        logger.info("%s: acting only on the Releases of this shard", options.shard)
    stop = stop_flag or asyncio.Event()
    started = asyncio.Event()  # Kopf has started its watches
    elector = None if options.leader_election is None else LeaderElector(runtime.api, options.leader_election)

    def readiness() -> Verdict:
        if elector is None or elector.leading():
            return acting(runtime.cache, runtime.limits, started.is_set() and runtime.synced.is_set())
        if elector.in_contact():
            return Verdict(True, f"standing by; the leader is {elector.holder or 'being elected'}")
        return Verdict(False, "no contact with the API server")

    health = HealthServer(
        Endpoint.parse(options.liveness_endpoint) if options.liveness_endpoint else None,
        Endpoint.parse(options.readiness_endpoint) if options.readiness_endpoint else None,
        readiness,
        lambda: alive(runtime.cache, runtime.limits),
    )
    metrics_server = None
    relay = asyncio.create_task(_relay((started, runtime.synced), ready_flag))
    try:
        await health.start()
        if options.metrics_port is not None:
            metrics_server = runtime.metrics.serve(options.metrics_port)
        if elector is None:
            runtime.metrics.leader.set(1)
            await _kopf(runtime, options, stop, started)
        else:
            runtime.api.fence = elector.leading
            if await elector.acquire(stop, standing_by=lambda: _set(ready_flag)):
                await _lead(runtime, options, elector, stop, started)
    finally:
        relay.cancel()
        await health.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        runtime.api.close()
        runtime.outside.shutdown(wait=False, cancel_futures=True)


def acting(cache: Cache, limits: Limits, watching: bool) -> Verdict:
    """Readiness of the operator that acts: once `watching` (Kopf started, every informer listed), and
    not while an informer has gone without a current view for longer than the unready limit."""
    behind = cache.problems(limits.unready_after_seconds)
    if behind:
        return Verdict(False, "; ".join(behind))
    return Verdict(watching, "watching Releases" if watching else "starting")


def alive(cache: Cache, limits: Limits) -> Verdict:
    """Liveness: failed once an informer has gone without a current view past the unhealthy limit (a
    restart may cure what retrying did not, and a standby takes over meanwhile)."""
    behind = cache.problems(limits.unhealthy_after_seconds)
    return Verdict(not behind, "; ".join(behind) or "alive")


async def _lead(
    runtime: Runtime,
    options: OperatorOptions,
    elector: LeaderElector,
    stop: asyncio.Event,
    started: asyncio.Event,
) -> None:
    """Act while the lease holds. Kopf runs standalone: its peering would only duplicate the election."""
    kopf_stop = asyncio.Event()
    holding = asyncio.create_task(elector.hold())
    holding.add_done_callback(lambda _: kopf_stop.set())
    stopping = asyncio.create_task(stop.wait())
    stopping.add_done_callback(lambda _: kopf_stop.set())
    runtime.metrics.leader.set(1)
    try:
        await _kopf(runtime, options, kopf_stop, started)
    finally:
        runtime.metrics.leader.set(0)
        lost = holding.done() and not holding.cancelled()
        holding.cancel()
        stopping.cancel()
        await elector.release()
    if lost:
        identity = elector.election.identity
        if elector.holder == identity:
            raise LeadershipLost(f"{identity} could not renew its lease within the renew deadline")
        raise LeadershipLost(f"{identity} lost the lease to {elector.holder or 'nobody'}")


async def _kopf(
    runtime: Runtime, options: OperatorOptions, stop: asyncio.Event, started: asyncio.Event
) -> None:
    """Kopf (which takes away earlier versions' finalizers) beside the informers that fill the cache, and the
    scheduler of the passes over it."""
    connection = runtime.cache.watch(
        runtime.api.configuration,
        options.namespaces,
        runtime.wakes(),
        runtime.wake_routed,
        release_changed=runtime.release_event,
        limits=runtime.limits,
    )
    informing = asyncio.create_task(runtime.cache.run(runtime.synced))
    scheduling = asyncio.create_task(runtime.scheduler.run(runtime.synced))
    try:
        await kopf.operator(
            registry=REGISTRY,
            settings=operator_settings(),
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            standalone=True,  # one operator acts: the declared one, or the Lease's holder
            memo=kopf.Memo(runtime=runtime, background=(scheduling, informing)),
            stop_flag=stop,
            ready_flag=started,
        )
    finally:
        await end_in_order((scheduling, informing))
        await connection.close()


async def _relay(
    started: tuple[asyncio.Event, ...], ready_flag: asyncio.Event | threading.Event | None
) -> None:
    for flag in started:
        await flag.wait()
    _set(ready_flag)


def _set(flag: asyncio.Event | threading.Event | None) -> None:
    if flag is not None:
        flag.set()


@dataclass
class OperatorThread:
    """The real operator in a background thread with its own event loop; stops cleanly on exit."""

    configuration: kubernetes.client.Configuration
    options: OperatorOptions = field(default_factory=lambda: OperatorOptions(standalone=True))
    startup_timeout: float = 30.0
    runtime: Runtime | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def __enter__(self) -> OperatorThread:
        self.runtime = self.runtime or new_runtime(self.configuration, self.options)
        self._thread = threading.Thread(target=self._main, name="shepherd-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.startup_timeout):
            self.stop()
            raise RuntimeError(f"the operator did not start within {self.startup_timeout}s: {self._error!r}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def error(self) -> BaseException | None:
        """Why the operator ended on its own (e.g. LeadershipLost), once it has."""
        return self._error

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except LeadershipLost as error:  # an expected end: the operator stopped acting
            self._error = error
        except BaseException as error:
            self._error = error
            self._ready.set()
            raise

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if not self._stopping.is_set():  # else stop() came before the loop existed
            await run_operator(self.configuration, self.options, self._stop, self._ready, self.runtime)
