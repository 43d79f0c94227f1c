"""The Kopf shell: one long-lived loop per Release, woken by watch events or when due.

Kopf watches Releases, owned Deployments and Jobs, approvals and policies; each watch event only sets the
Release's wake-up flag. The loop reconciles, then sleeps until the next change,
the decision's own due time (a pause ends, a deadline passes), or the resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from shepherd.core.workloads import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from shepherd.kube import APPROVALS, GROUP, PLURAL, VERSION, KubeAPI, ReleaseKey
from shepherd.metrics import OperatorMetrics
from shepherd.notifier import DeliveryPolicy, Notifier
from shepherd.reconcile import reconcile

REGISTRY = kopf.OperatorRegistry()
MAX_BACKOFF_SECONDS = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """What the handlers share; nothing in it is needed to resume after a restart."""

    api: KubeAPI
    resync_seconds: float
    clock: Callable[[], datetime] = utc_now
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    started: int = 0  # reconciles begun, and finished: lets a test wait for one that began after a change
    reconciles: int = 0
    own_writes: dict[ReleaseKey, str] = field(
        default_factory=dict
    )  # resourceVersion of our last status write
    _wakers: dict[ReleaseKey, asyncio.Event] = field(default_factory=dict)
    _dependents: dict[ReleaseKey, set[ReleaseKey]] = field(default_factory=dict)
    notifier: Notifier = field(init=False)

    def __post_init__(self) -> None:
        self.notifier = Notifier(self.api, self.metrics, self.delivery, self.clock)

    def waker(self, key: ReleaseKey) -> asyncio.Event:
        return self._wakers.setdefault(key, asyncio.Event())

    def wake(self, key: ReleaseKey, resource_version: str | None = None) -> None:
        if resource_version is not None and self.own_writes.get(key) == resource_version:
            return  # the echo of our own status write: nothing new to see
        self.waker(key).set()

    def seconds_until(self, due: datetime | None) -> float:
        """Sleep until the decision is due, never longer than the resync safety net."""
        if due is None:
            return self.resync_seconds
        return min(self.resync_seconds, max(0.0, (due - self.clock()).total_seconds()))

    def depend(self, key: ReleaseKey, releases: tuple[tuple[str, str], ...]) -> None:
        """Remember which Releases this one waits for, so their changes wake it."""
        for other in releases:
            self._dependents.setdefault(ReleaseKey(*other), set()).add(key)

    def wake_all(self) -> None:
        for waker in self._wakers.values():
            waker.set()

    def wake_dependents(self, key: ReleaseKey) -> None:
        for dependent in self._dependents.get(key, ()):
            self.waker(dependent).set()

    def forget(self, key: ReleaseKey) -> None:
        self._wakers.pop(key, None)
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
    name: str, namespace: str | None, memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    runtime: Runtime = memo.runtime
    key = ReleaseKey(namespace or "", name)
    wake = runtime.waker(key)
    failures = 0
    try:
        while True:
            wake.clear()
            runtime.started += 1
            try:
                with runtime.metrics.reconcile_duration.time():
                    outcome = await reconcile(
                        runtime.api, key, runtime.clock, runtime.metrics, runtime.notifier
                    )
            except Exception as error:  # one bad object or a flaky API must not stop the others
                runtime.metrics.reconcile_errors.inc()
                failures += 1
                delay = min(MAX_BACKOFF_SECONDS, 2.0**failures)
                logger.warning(
                    "reconcile failed (retrying in %.0fs): %s", delay, error, exc_info=failures == 1
                )
            else:
                failures = 0
                if outcome is None:
                    return
                if outcome.written_version:
                    runtime.own_writes[key] = outcome.written_version
                runtime.depend(key, outcome.dependencies)
                delay = runtime.seconds_until(outcome.wake_at)
            finally:
                runtime.reconciles += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)
    finally:
        runtime.forget(key)


@kopf.on.event(GROUP, VERSION, PLURAL, registry=REGISTRY)
async def release_changed(name: str, namespace: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    if namespace:
        memo.runtime.wake(ReleaseKey(namespace, name), body.metadata.get("resourceVersion"))
        memo.runtime.wake_dependents(ReleaseKey(namespace, name))


@kopf.on.event(GROUP, VERSION, "releasepolicies", registry=REGISTRY)
async def policy_changed(memo: Any, **_: Any) -> None:
    """A policy may concern any Release: wake them all (a freeze begins or ends, a gate appears)."""
    memo.runtime.wake_all()


@kopf.on.event(GROUP, VERSION, APPROVALS, registry=REGISTRY)
async def approval_changed(namespace: str | None, spec: kopf.Spec, memo: Any, **_: Any) -> None:
    release = spec.get("release")
    if namespace and release:
        memo.runtime.wake(ReleaseKey(namespace, str(release)))


@kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY_LABEL: MANAGED_BY}, registry=REGISTRY)
async def deployment_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    release = labels.get(INSTANCE_LABEL)
    if release and namespace:
        memo.runtime.wake(ReleaseKey(namespace, release))


@kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY_LABEL: MANAGED_BY}, registry=REGISTRY)
async def job_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    """A job gate's or a migration's Job finished: its Release may go on (or fail) at once."""
    release = labels.get(INSTANCE_LABEL)
    if release and namespace:
        memo.runtime.wake(ReleaseKey(namespace, release))
