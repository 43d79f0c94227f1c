"""The Kopf shell: one long-lived loop per Release, woken by watch events or when due.

Kopf watches Releases and feeds them into the cache; the cache's informers watch owned Deployments,
revisions, Jobs and ConfigMaps, approvals, policies and namespaces. A watch event only sets the wake-up
flag of the Releases it concerns. The loop reconciles (from the cache), then sleeps until the next change,
the decision's own due time (a pause ends, a deadline passes), or the resync, which comes at a random
point of the second half of its interval so that the Releases' resyncs never arrive as one burst.

A reconcile that fails is tried again: at once after a conflict (a write that lost a race), otherwise after
an exponential backoff with jitter (tenacity) that only a change of the Release itself cuts short; the
watch events of its Deployments and Jobs, or the echo of the operator's own writes, do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity import wait_exponential_jitter as exponential_jitter

from shepherd.cache import Cache, Wakes
from shepherd.informers import trim_in_place
from shepherd.kube import GROUP, PLURAL, VERSION, Conflict, KubeAPI, ReleaseKey
from shepherd.metrics import OperatorMetrics
from shepherd.notifier import DeliveryPolicy, Notifier
from shepherd.reconcile import Outcome, reconcile
from shepherd.sharding import Shard

REGISTRY = kopf.OperatorRegistry()
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
CONFLICT_RETRIES = 3  # conflicts in a row retried at once; more back off like any failure
OWN_WRITES_KEPT = 8

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """What the handlers share; nothing in it is needed to resume after a restart."""

    api: KubeAPI
    resync_seconds: float
    clock: Callable[[], datetime] = utc_now
    shard: Shard = field(default_factory=Shard)
    cache: Cache = field(default_factory=Cache)
    synced: asyncio.Event = field(default_factory=asyncio.Event)  # every informer has listed once
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    started: int = 0  # reconciles begun, and finished: lets a test wait for one that began after a change
    reconciles: int = 0
    first_backoff_seconds: float = FIRST_BACKOFF_SECONDS
    max_backoff_seconds: float = MAX_BACKOFF_SECONDS
    # resourceVersions of our own latest writes to each Release (status, annotations): their echo is no change
    own_writes: dict[ReleaseKey, deque[str]] = field(default_factory=dict)
    _wakers: dict[ReleaseKey, asyncio.Event] = field(default_factory=dict)
    _changed: dict[ReleaseKey, asyncio.Event] = field(default_factory=dict)  # the Release itself changed
    _seen: dict[ReleaseKey, tuple[object, ...]] = field(default_factory=dict)  # its generation, annotations
    _dependents: dict[ReleaseKey, set[ReleaseKey]] = field(default_factory=dict)
    _routed: dict[tuple[str, str], set[ReleaseKey]] = field(default_factory=dict)  # HTTPRoute -> Releases
    notifier: Notifier = field(init=False)

    def __post_init__(self) -> None:
        self.notifier = Notifier(self.api, self.metrics, self.delivery, self.clock)

    def waker(self, key: ReleaseKey) -> asyncio.Event:
        return self._wakers.setdefault(key, asyncio.Event())

    def changed(self, key: ReleaseKey) -> asyncio.Event:
        return self._changed.setdefault(key, asyncio.Event())

    def wake(self, key: ReleaseKey) -> None:
        self.waker(key).set()

    def release_changed(
        self, key: ReleaseKey, resource_version: str | None, generation: object, annotations: object
    ) -> None:
        if resource_version is None or resource_version not in self.own_writes.get(key, ()):
            self.waker(key).set()  # anything but the echo of our own write
        # A person's change (spec or annotations, e.g. a command) also ends a backoff; a status write
        # (ours, even one whose echo comes before we know its resourceVersion) does not.
        seen = (generation, repr(sorted(dict(annotations or {}).items())))  # type: ignore[call-overload]
        if self._seen.get(key) != seen:
            self._seen[key] = seen
            self.changed(key).set()

    def wrote(self, key: ReleaseKey, resource_version: str) -> None:
        self.own_writes.setdefault(key, deque(maxlen=OWN_WRITES_KEPT)).append(resource_version)

    def backoff(self, state: RetryCallState) -> float:
        """At once after a conflict (the first few tries); else exponential, jittered by a first delay."""
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, Conflict) and state.attempt_number <= CONFLICT_RETRIES:
            return 0.0
        first = self.first_backoff_seconds
        return float(exponential_jitter(multiplier=first, max=self.max_backoff_seconds, jitter=first)(state))

    async def sleep_unless_changed(self, key: ReleaseKey, seconds: float) -> None:
        """A backoff: only a change of the Release itself ends it early."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed(key).wait(), timeout=seconds)

    def seconds_until(self, due: datetime | None) -> float:
        """Sleep until the decision is due, never longer than the resync safety net (jittered)."""
        resync = self.resync_seconds * random.uniform(0.5, 1.0)
        if due is None:
            return resync
        return min(resync, max(0.0, (due - self.clock()).total_seconds()))

    def owns(self, namespace: str, name: str) -> bool:
        return self.shard.owns(namespace, name)

    def wakes(self) -> Wakes:
        return Wakes(release=self.wake, everyone=self.wake_all, namespace=self.wake_namespace)

    def depend(
        self, key: ReleaseKey, releases: tuple[tuple[str, str], ...], routes: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Remember the Releases this one waits for and the HTTPRoutes it sets: their changes wake it."""
        for other in releases:
            self._dependents.setdefault(ReleaseKey(*other), set()).add(key)
        for route in routes:
            self._routed.setdefault(route, set()).add(key)

    def wake_routed(self, route: tuple[str, str]) -> None:
        for key in self._routed.get(route, ()):
            self.waker(key).set()

    def wake_all(self) -> None:
        for waker in self._wakers.values():
            waker.set()

    def wake_namespace(self, namespace: str) -> None:
        for key, waker in self._wakers.items():
            if key.namespace == namespace:
                waker.set()

    def wake_dependents(self, key: ReleaseKey) -> None:
        for dependent in self._dependents.get(key, ()):
            self.waker(dependent).set()

    def forget(self, key: ReleaseKey) -> None:
        self._wakers.pop(key, None)
        self._changed.pop(key, None)
        self._seen.pop(key, None)
        self.own_writes.pop(key, None)


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Fixed from the first release on: changing storage later makes a live operator re-run handlers.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    return settings


@kopf.on.login(registry=REGISTRY)
def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """Kopf talks to the same API server, with the same credentials, as the adapter."""
    config = memo.runtime.api.configuration
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    scheme, _space, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


@kopf.on.cleanup(registry=REGISTRY)
async def send_last_notifications(memo: Any, **_: Any) -> None:
    await memo.runtime.notifier.drain()


@kopf.daemon(GROUP, VERSION, PLURAL, registry=REGISTRY, cancellation_timeout=10.0)
async def rollout_loop(
    name: str,
    namespace: str | None,
    memo: Any,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    runtime: Runtime = memo.runtime
    key = ReleaseKey(namespace or "", name)
    if not runtime.owns(key.namespace, key.name):
        # Another shard's Release. Its loop still exists here, idle: a Kopf filter (when=) would make this
        # shard's Kopf remove the finalizer that the owning shard's Kopf adds, and the two would fight.
        await stopped.wait()
        return
    wake = runtime.waker(key)
    await runtime.synced.wait()  # decide on nothing before the watches have listed what exists
    try:
        while True:
            outcome = await reconcile_until_done(runtime, key)
            if outcome is None:
                return
            runtime.depend(key, outcome.dependencies, outcome.routes)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=runtime.seconds_until(outcome.wake_at))
    finally:
        runtime.forget(key)


async def reconcile_until_done(runtime: Runtime, key: ReleaseKey) -> Outcome | None:
    """Reconcile until one pass goes through; one bad object or a flaky API must not stop the others."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(Exception),
        wait=runtime.backoff,
        sleep=lambda seconds: runtime.sleep_unless_changed(key, seconds),
        before_sleep=lambda state: _log_failure(key, state),
        reraise=True,
    )
    fresh = False  # after a conflict, the Release is read from the API server, not the cache
    async for attempt in retrying:
        with attempt:
            runtime.waker(key).clear()
            runtime.changed(key).clear()
            runtime.started += 1
            try:
                with runtime.metrics.reconcile_duration.time():
                    return await reconcile(
                        runtime.api,
                        runtime.cache,
                        key,
                        runtime.clock,
                        runtime.metrics,
                        runtime.notifier,
                        on_write=lambda version: runtime.wrote(key, version),
                        fresh=fresh,
                    )
            except Conflict as conflict:
                runtime.metrics.reconcile_errors.inc()
                if conflict.current is not None:
                    runtime.cache.remember([conflict.current])
                fresh = True
                raise
            except Exception:
                runtime.metrics.reconcile_errors.inc()
                raise
            finally:
                runtime.reconciles += 1
    raise AssertionError("tenacity retries every failure")  # pragma: no cover


def _log_failure(key: ReleaseKey, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    delay = state.next_action.sleep if state.next_action is not None else 0.0
    when = f"retrying in {delay:.1f}s" if delay else "retrying at once"
    # A conflict retried at once is the cache's ordinary race with another writer, not a failure.
    level = logging.INFO if isinstance(error, Conflict) and not delay else logging.WARNING
    logger.log(
        level,
        "%s/%s: reconcile failed (attempt %d, %s): %s",
        key.namespace,
        key.name,
        state.attempt_number,
        when,
        error,
        exc_info=error if state.attempt_number == 1 and not isinstance(error, Conflict) else None,
    )


@kopf.on.event(GROUP, VERSION, PLURAL, registry=REGISTRY)
async def release_changed(
    name: str, namespace: str | None, type: str | None, event: Any, memo: Any, **_: Any
) -> None:
    if not namespace:
        return
    runtime: Runtime = memo.runtime
    key = ReleaseKey(namespace, name)
    raw = event["object"]
    # Kopf keeps this very dict as the Release's live body for its daemon: trimmed here, Kopf's copy is too.
    trim_in_place(raw)
    if type == "DELETED":
        runtime.cache.releases.remove(raw)
    else:
        runtime.cache.releases.put(raw)
    meta = raw.get("metadata") or {}
    runtime.release_changed(key, meta.get("resourceVersion"), meta.get("generation"), meta.get("annotations"))
    runtime.wake_dependents(key)
