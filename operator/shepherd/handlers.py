"""The Kopf shell: the scheduler decides when each Release is reconciled, over a cache fed by watches.

The cache's informers watch the Releases, their Deployments, revisions, Jobs and ConfigMaps, approvals,
policies and namespaces; a watch event only wakes the Releases it concerns. A pass reads from the cache
alone (see reconcile.py). A Release that is gone, whether its deletion came on the watch, it was missing
from a relist, or its own pass found it gone, is forgotten everywhere at once (`Runtime.forget`).

Kopf still watches Releases, for what only it does here: it takes away the finalizer that earlier versions
(which ran a Kopf daemon per Release) put on them. It no longer feeds the cache: its view is not
corrected after a relist (see cache.py), and one feed delivers each change once. No Kopf daemon or timer,
so Kopf puts no finalizer on a Release: deleting a Release needs nothing from the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from shepherd.cache import Cache, Wakes
from shepherd.informers import discard
from shepherd.kube import GROUP, PLURAL, VERSION, Conflict, KubeAPI, ReleaseKey
from shepherd.limits import Limits
from shepherd.metrics import OperatorMetrics
from shepherd.notifier import DeliveryPolicy, Notifier
from shepherd.reconcile import Outcome, ParsedSpecs, reconcile, still_decided
from shepherd.scheduler import Scheduler
from shepherd.sharding import Shard

REGISTRY = kopf.OperatorRegistry()
logger = logging.getLogger(__name__)
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
RECONCILE_WORKERS = 32  # passes at once, as many as the API threads they write through
OWN_WRITES_KEPT = 8


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """What the handlers share; nothing in it is needed to resume after a restart."""

    api: KubeAPI
    resync_seconds: float
    clock: Callable[[], datetime] = utc_now
    shard: Shard = field(default_factory=Shard)
    limits: Limits = field(default_factory=Limits)
    cache: Cache = field(default_factory=Cache)
    synced: asyncio.Event = field(default_factory=asyncio.Event)  # every informer has listed once
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    started: int = 0  # reconciles begun, and finished: lets a test wait for one that began after a change
    reconciles: int = 0
    first_backoff_seconds: float = FIRST_BACKOFF_SECONDS
    max_backoff_seconds: float = MAX_BACKOFF_SECONDS
    workers: int = RECONCILE_WORKERS
    # resourceVersions of our own latest writes to each Release (status, annotations): their echo is no change
    own_writes: dict[ReleaseKey, tuple[str, ...]] = field(default_factory=dict)
    _seen: dict[ReleaseKey, tuple[object, ...]] = field(default_factory=dict)  # its generation, annotations
    _outcomes: dict[ReleaseKey, Outcome] = field(default_factory=dict)  # each Release's last pass
    specs: ParsedSpecs = field(default_factory=ParsedSpecs)
    _dependents: dict[ReleaseKey, set[ReleaseKey]] = field(default_factory=dict)
    _routed: dict[tuple[str, str], set[ReleaseKey]] = field(default_factory=dict)  # HTTPRoute -> Releases
    # What each Release named on its last pass (the Releases it waits for, the HTTPRoutes it sets), where any.
    _waits_for: dict[ReleaseKey, tuple[tuple[ReleaseKey, ...], tuple[tuple[str, str], ...]]] = field(
        default_factory=dict
    )
    notifier: Notifier = field(init=False)
    scheduler: Scheduler = field(init=False)
    # Prometheus queries and webhook gates: never on the threads that write to the API server.
    outside: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.outside = ThreadPoolExecutor(self.limits.outside_workers, thread_name_prefix="shepherd-outside")
        self.notifier = Notifier(self.api, self.metrics, self.delivery, self.clock)
        self.scheduler = Scheduler(
            self.reconcile_once,
            workers=self.workers,
            resync_seconds=self.resync_seconds,
            first_backoff_seconds=self.first_backoff_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
            pass_seconds=self.limits.pass_seconds,
            clock=self.clock,
            unchanged=self.unchanged,
        )

    def wake(self, key: ReleaseKey) -> None:
        self.scheduler.wake(key)

    def release_event(self, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        """What the Releases' informer saw: a Release's newest version, or (`new` None) that it is gone."""
        meta = (new or old or {}).get("metadata") or {}
        key = ReleaseKey(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if new is None:
            self.forget(key)
            return
        meta = new.get("metadata") or {}
        self.release_changed(
            key, meta.get("resourceVersion"), meta.get("generation"), meta.get("annotations")
        )
        self.wake_dependents(key)

    def release_changed(
        self, key: ReleaseKey, resource_version: str | None, generation: object, annotations: object
    ) -> None:
        if not self.owns(key.namespace, key.name):
            return
        self.scheduler.add(key)  # a no-op for a Release it already has
        # A person's change (spec or annotations, e.g. a command) also ends a backoff; a status write
        # (ours, even one whose echo comes before we know its resourceVersion) does not.
        seen = (generation, repr(sorted(dict(annotations or {}).items())))  # type: ignore[call-overload]
        changed = self._seen.get(key) != seen
        self._seen[key] = seen
        if changed or resource_version is None or resource_version not in self.own_writes.get(key, ()):
            self.scheduler.wake(key, changed=changed)  # anything but the echo of our own write

    def wrote(self, key: ReleaseKey, resource_version: str) -> None:
        kept = self.own_writes.get(key, ())[1 - OWN_WRITES_KEPT :]  # a tuple: a deque costs 600 bytes
        self.own_writes[key] = (*kept, resource_version)

    def owns(self, namespace: str, name: str) -> bool:
        return self.shard.owns(namespace, name)

    def wakes(self) -> Wakes:
        return Wakes(release=self.wake, everyone=self.wake_all, namespace=self.wake_namespace)

    def depend(
        self, key: ReleaseKey, releases: tuple[tuple[str, str], ...], routes: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Remember the Releases this one waits for and the HTTPRoutes it sets, in place of what its last
        pass named: their changes wake it."""
        self._unlink(key)
        if not releases and not routes:
            return
        others = tuple(ReleaseKey(*other) for other in releases)
        self._waits_for[key] = (others, routes)
        for other in others:
            self._dependents.setdefault(other, set()).add(key)
        for route in routes:
            self._routed.setdefault(route, set()).add(key)

    def _unlink(self, key: ReleaseKey) -> None:
        """Forget what `key` waits for and the routes it sets."""
        others, routes = self._waits_for.pop(key, ((), ()))
        for other in others:
            discard(self._dependents, other, key)
        for route in routes:
            discard(self._routed, route, key)

    def wake_routed(self, route: tuple[str, str]) -> None:
        for key in self._routed.get(route, ()):
            self.scheduler.wake(key)

    def wake_all(self) -> None:
        for key in self.scheduler:
            self.scheduler.wake(key)

    def wake_namespace(self, namespace: str) -> None:
        for key in self.scheduler:
            if key.namespace == namespace:
                self.scheduler.wake(key)

    def wake_dependents(self, key: ReleaseKey) -> None:
        for dependent in self._dependents.get(key, ()):
            self.scheduler.wake(dependent)

    def forget(self, key: ReleaseKey) -> None:
        """A Release is gone: let go of all that is kept for it, at once. The Releases waiting for it are
        woken (their gate sees it gone) and, as they still name it, name it again on that pass."""
        if key in self.scheduler:
            logger.info("%s/%s is gone: forgotten", key.namespace, key.name)
        self.wake_dependents(key)
        self.scheduler.forget(key)
        self.cache.forget(key)
        self._seen.pop(key, None)
        self.own_writes.pop(key, None)
        self._outcomes.pop(key, None)
        self._unlink(key)
        self._dependents.pop(key, None)
        self.metrics.forget(key.namespace, key.name)

    def unchanged(self, key: ReleaseKey) -> Outcome | None:
        """The Release's last outcome if it still stands (a pass would decide nothing new); counted as a
        pass that was skipped."""
        started = time.perf_counter()
        previous = self._outcomes.get(key)
        if previous is None or not still_decided(self.cache, key, previous, self.clock()):
            return None
        self.started += 1
        self.reconciles += 1
        self.metrics.reconcile_skipped.inc()
        self.metrics.reconcile_duration.observe(time.perf_counter() - started)
        return previous

    async def reconcile_once(self, key: ReleaseKey, fresh: bool) -> Outcome | None:
        """One pass; `fresh` (after a conflict) reads the Release from the API server, not the cache."""
        self.started += 1
        previous = self._outcomes.pop(key, None)  # a failed pass decides afresh next time
        try:
            with self.metrics.reconcile_duration.time():
                outcome = await reconcile(
                    self.api,
                    self.cache,
                    key,
                    self.clock,
                    self.metrics,
                    self.notifier,
                    on_write=lambda version: self.wrote(key, version),
                    fresh=fresh,
                    outside=self.outside,
                    previous=previous,
                    specs=self.specs,
                )
            if outcome is not None and outcome is previous:
                self.metrics.reconcile_skipped.inc()
        except Conflict as conflict:
            self.metrics.reconcile_errors.inc()
            if conflict.current is not None:
                self.cache.remember([conflict.current])
            raise
        except Exception:
            self.metrics.reconcile_errors.inc()
            raise
        finally:
            self.reconciles += 1
            if key not in self.scheduler:  # forgotten during its pass: what the pass kept goes too
                self.forget(key)
        if key not in self.scheduler:
            return outcome
        if outcome is None:
            self.forget(key)  # gone
        else:
            self._outcomes[key] = outcome
            self.depend(key, outcome.dependencies, outcome.routes)
        return outcome


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


async def end_in_order(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel each task and wait for it to end before the next: the scheduler lets its passes end while
    the informers still feed the cache they read."""
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.on.cleanup(registry=REGISTRY)
async def stop_passes_then_notify(memo: Any, **_: Any) -> None:
    """End the scheduler and the informers as Kopf stops, on every way it stops (a signal, the stop flag, a
    lost lease): started beside Kopf, they would be its "hung tasks", waited for 5 s. Then send what the
    last passes had to tell."""
    await end_in_order(memo.background)
    await memo.runtime.notifier.drain()


@kopf.on.event(GROUP, VERSION, PLURAL, registry=REGISTRY)
async def watched_by_kopf(**_: Any) -> None:
    """Nothing to do: this handler has Kopf watch Releases, and so take away an earlier version's finalizer
    (Kopf removes its own finalizer from the objects it watches when no handler needs it). The cache
    has the Releases from its own informer."""
