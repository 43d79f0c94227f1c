"""One reconcile of one Release: observe, decide, record, act.

The status is written first: it holds what this pass decided (the rollout state the actions bring about,
and the commands acknowledged), and every action is idempotent and derived from that state. So a write
that fails, or an operator killed between two writes, leaves either the old status and nothing done (the
next pass decides again), or the new status and part of its actions (the next pass derives the same actions
from it and finishes them): never a status behind the workloads, which would make the next decision undo
work already done. Command annotations are removed last, once their acknowledgement is in status.

Everything observed comes from the watch-fed cache, which also holds the answers of this operator's own
writes: a pass makes no read request. The status write names the resourceVersion the decision was made
on, so a decision made on a copy that someone else changed meanwhile is refused (a conflict: read again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shepherd.cache import Cache, Fingerprint
from shepherd.core import Observations, ReleaseObject, decide, needed
from shepherd.core.actions import Event
from shepherd.core.gates import Approval, dependencies
from shepherd.core.notifications import select
from shepherd.core.policy import applicable, policy_gates
from shepherd.core.rejection import STATUS_REFUSED, record_rejection
from shepherd.core.spec import ApprovalGate, Gate, ReleaseSpec, SpecError, parse_spec
from shepherd.core.timefmt import parse_time
from shepherd.core.traffic import route_key
from shepherd.kube import KubeAPI, Rejected, ReleaseKey, Written
from shepherd.measure import gather
from shepherd.metrics import OperatorMetrics
from shepherd.notifier import Notifier
from shepherd.telemetry import observe
from shepherd.webhooks import call_webhooks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    wake_at: datetime | None  # when the decision may change without any watch event
    dependencies: tuple[tuple[str, str], ...] = ()  # Releases whose changes must wake this one
    routes: tuple[tuple[str, str], ...] = ()  # HTTPRoutes whose changes must wake this one
    # The versions of all it decided on (Cache.fingerprint); None: it cannot be told, so never skipped.
    fingerprint: Fingerprint | None = None


async def reconcile(
    api: KubeAPI,
    cache: Cache,
    key: ReleaseKey,
    clock: Callable[[], datetime],
    metrics: OperatorMetrics | None = None,
    notifier: Notifier | None = None,
    on_write: Callable[[str], None] | None = None,
    fresh: bool = False,
    outside: Executor | None = None,
    previous: Outcome | None = None,
    specs: ParsedSpecs | None = None,
) -> Outcome | None:
    """Returns None when the Release is gone or being deleted. `on_write` is told the resourceVersion of
    each write to the Release itself, as it happens, so that its echo on the watch wakes nothing. `fresh`
    reads the Release from the API server first (after a conflict, or when the watch has not shown it).
    Prometheus and webhooks are called on the `outside` threads.

    `previous`, this Release's last outcome, makes a pass that can change nothing free: when nothing it
    decided on has a new version and its next due time has not come, the decision would be the same, so
    it is not made again (a resync of a Release at rest costs a few dictionary lookups)."""
    if not fresh and previous is not None and still_decided(cache, key, previous, clock()):
        return previous

    def written(writes: list[Written]) -> None:
        cache.remember(writes)
        for write in writes:
            if write.plural == "releases" and not write.deleted:
                own(str(write.object["metadata"].get("resourceVersion", "")))

    async def hold(held: Mapping[str, Any], last: Mapping[str, Any], version: str = "") -> None:
        """Write `held` over the status `last` written: the Release waits, Stalled, for a person."""
        logger.warning("%s/%s: %s", key.namespace, key.name, held.get("message"))
        written([await asyncio.to_thread(api.patch_status, key, status_patch(last, held), version)])
        if metrics is not None:
            metrics.record(key.namespace, key.name, observe(last, held, view.annotations))

    own = on_write or (lambda _version: None)
    release = None if fresh else cache.release(key)
    if release is None:
        release = await asyncio.to_thread(api.get_release, key)
        if release is not None:
            cache.remember([Written("releases", release)])
    if release is None or release["metadata"].get("deletionTimestamp"):
        return None
    meta = release["metadata"]
    uid = str(meta.get("uid", ""))
    deployments = cache.owned_deployments(key, uid)
    revisions = cache.recorded_revisions(key, uid)
    jobs = cache.owned_jobs(key, uid)
    policies = cache.all_policies()
    labels = cache.namespace_labels(key.namespace) if policies else {}
    config_maps = cache.owned_config_maps(key, uid)
    # Parsed once per generation, for what the shell must fetch and for the core; an invalid spec fetches
    # nothing (decide() holds it).
    generation = int(meta.get("generation") or 0)
    parsed = (specs or ParsedSpecs()).of(uid, generation, release.get("spec") or {})
    spec = parsed if isinstance(parsed, ReleaseSpec) else None
    routing = spec.routing if spec else None
    routes = tuple(route_key(ref, key.namespace) for ref in routing.routes) if routing else ()
    if routes:
        await cache.watching_routes()
    view = ReleaseObject(
        name=key.name,
        namespace=key.namespace,
        uid=uid,
        generation=generation,
        annotations=meta.get("annotations") or {},
        spec=release.get("spec") or {},
        status=release.get("status") or {},
        parsed=parsed,
    )
    matched = applicable(policies, labels)
    asked = needed(view, clock(), policy_gates(matched))
    gates = (*spec.gates, *policy_gates(matched)) if spec and asked.gate_objects else ()
    wanted = dependencies(gates, key.namespace)
    # Taken before anything is read: a change from now on is one this decision did not see.
    fingerprint = cache.fingerprint(key, wanted, routes)
    answers, webhooks, (approvals, releases) = await asyncio.gather(
        gather(
            api, key, spec.analysis.prometheus if spec and spec.analysis else None, asked, clock(), outside
        ),
        call_webhooks(api, key.namespace, asked.webhook_calls, outside),
        gate_observations(api, cache, key, gates, wanted) if gates else no_gate_objects(),
    )
    now = clock()
    observed = Observations(
        deployments,
        revisions,
        answers.measurements,
        answers.checks,
        approvals,
        releases,
        tuple(policies),
        labels,
        answers.gate_samples,
        webhooks,
        jobs,
        config_maps=config_maps,
        routes={route: cache.route(*route) for route in routes},
        services=cache.owned_services(key, uid) if routes else {},
    )
    decision = decide(view, observed, now)
    old_status = release.get("status") or {}
    status = decision.status
    patch = status_patch(old_status, status)
    if patch:
        version = str(meta.get("resourceVersion") or "")
        try:
            written([await asyncio.to_thread(api.patch_status, key, patch, version)])
        except Rejected as refused:
            # Held as it was last written, by a smaller write; no action of this decision is applied.
            held, event = record_rejection(
                view.generation, old_status, refused.rejection, clock(), STATUS_REFUSED
            )
            await hold(held, old_status, version)
            await post_events(api, key, release, (event,), now)
            return Outcome(None, tuple(releases), routes)
        if notifier is not None:
            # Only now is the transition recorded: sent once, in the background, never holding the rollout.
            notifier.send(release, select(view, status, matched, now))
    if metrics is not None:  # as the status write records the transition, before the actions
        metrics.record(key.namespace, key.name, observe(old_status, status, view.annotations))
    await post_events(api, key, release, decision.events, now)
    wake_at = decision.wake_at
    try:
        for action in decision.actions:
            written(await asyncio.to_thread(api.apply, key, action, deployments))
    except Rejected as refused:
        # Nothing after the refused write is applied; the Release is held until its content changes.
        held, event = record_rejection(view.generation, status, refused.rejection, clock())
        await hold(held, status)
        await post_events(api, key, release, (event,), now)
        wake_at = None
    return Outcome(wake_at, tuple(releases), routes, fingerprint)


async def post_events(
    api: KubeAPI, key: ReleaseKey, release: Mapping[str, Any], events: Sequence[Event], now: datetime
) -> None:
    for event in events:
        try:
            await asyncio.to_thread(api.post_event, release, event, now)
        except Exception as error:  # an event is informative; losing one must not stop a rollout
            logger.warning("%s/%s: could not post event %s: %s", key.namespace, key.name, event.reason, error)


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from old to new status: changed keys, and null for keys to drop."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if v is not None and old.get(k) != v}
    patch.update({k: None for k in old if new.get(k) is None})
    return patch


def still_decided(cache: Cache, key: ReleaseKey, previous: Outcome, now: datetime) -> bool:
    """Whether `previous` is the decision a pass would make now: nothing it decided on has a new version,
    and its next due time has not come."""
    if previous.fingerprint is None or (previous.wake_at is not None and now >= previous.wake_at):
        return False
    return cache.fingerprint(key, previous.dependencies, previous.routes) == previous.fingerprint


class ParsedSpecs:
    """The Releases' specs parsed once per generation (the API server bumps a generation with every change
    of the spec), the most recently used kept: at rest no pass parses at all, and the Releases moving are
    few."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._held: OrderedDict[tuple[str, int], ReleaseSpec | SpecError] = OrderedDict()

    def of(self, uid: str, generation: int, raw: Mapping[str, Any]) -> ReleaseSpec | SpecError:
        key = (uid, generation)
        held = self._held.get(key) if uid and generation else None
        if held is None:
            try:
                held = parse_spec(raw)
            except SpecError as error:
                held = error
            if uid and generation:
                self._held[key] = held
                if len(self._held) > self._size:
                    self._held.popitem(last=False)
        else:
            self._held.move_to_end(key)
        return held


GateObjects = tuple[tuple[Approval, ...], dict[tuple[str, str], dict[str, Any] | None]]


async def no_gate_objects() -> GateObjects:
    return (), {}


async def gate_observations(
    api: KubeAPI, cache: Cache, key: ReleaseKey, gates: Sequence[Gate], wanted: Sequence[tuple[str, str]]
) -> GateObjects:
    """What gates look at: the namespace's approvals (if a gate asks) and the Releases depended on."""
    approvals: tuple[Approval, ...] = ()
    if any(isinstance(g.kind, ApprovalGate) for g in gates):
        approvals = tuple(approval_of(item) for item in cache.namespace_approvals(key.namespace))
    read = await asyncio.gather(*(depended_on(api, cache, ReleaseKey(*release)) for release in wanted))
    return approvals, dict(zip(wanted, read, strict=True))


async def depended_on(api: KubeAPI, cache: Cache, key: ReleaseKey) -> dict[str, Any] | None:
    """From the cache; a Release outside the watched namespaces is read (only while gating on it)."""
    return cache.release(key) or await asyncio.to_thread(api.get_release, key)


def approval_of(item: Mapping[str, Any]) -> Approval:
    meta, spec = item.get("metadata") or {}, item.get("spec") or {}
    revision = spec.get("revision")
    return Approval(
        name=str(meta.get("name", "")),
        release=str(spec.get("release", "")),
        revision=revision if isinstance(revision, int) else 0,
        approver=str(spec.get("approver", "")),
        created=parse_time(meta.get("creationTimestamp")),
        comment=str(spec.get("comment", "")),
        group=str(spec.get("group") or ""),
        release_uid=next(
            (
                str(ref.get("uid"))
                for ref in meta.get("ownerReferences") or []
                if ref.get("kind") == "Release" and ref.get("name") == spec.get("release")
            ),
            None,
        ),
    )
