"""Everything a reconcile reads, from watches: the Releases, and the Deployments, ControllerRevisions,
Jobs, ConfigMaps (metadata only), ReleaseApprovals, ReleasePolicies and Namespaces the operator owns or
reads, each kept by an informer of the operator's own (see informers.py).

The responses of the operator's own writes go in too (`remember`), so the next decision never runs on a
version older than what this operator wrote, even before the watch echoes it.

Releases come through an informer of their own as well, not through Kopf. DESIGN has Kopf watching and
patching the Release, and it still does (see handlers.py), but Kopf tells of what it sees, never of what it
stopped seeing: after its watch expires it lists again and reports the Releases that exist, so one deleted
meanwhile would stay in the cache, judged by other Releases' gates and named in /metrics for good. The
informer's relist is compared with what the cache held, so a Release missing from it is forgotten like one
whose deletion the watch delivered; and it is supervised like every other watch, its health shown on
/readyz. Being one stream, it also delivers each change once, in order, where two would need merging.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes.client

from shepherd.core.spec import RevisionContent
from shepherd.core.workloads import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from shepherd.informers import Changed, Connection, Informer, Resource, Store
from shepherd.kube import APPROVALS, GROUP, PLURAL, POLICIES, VERSION, ReleaseKey, Written
from shepherd.limits import Limits

MANAGED = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
RELEASES = Resource(GROUP, VERSION, PLURAL)
DEPLOYMENTS = Resource("apps", "v1", "deployments", label_selector=MANAGED)
REVISIONS = Resource("apps", "v1", "controllerrevisions", label_selector=MANAGED)
JOBS = Resource("batch", "v1", "jobs", label_selector=MANAGED)
CONFIG_MAPS = Resource("", "v1", "configmaps", label_selector=MANAGED, metadata_only=True)
APPROVAL_OBJECTS = Resource(GROUP, VERSION, APPROVALS)
POLICY_OBJECTS = Resource(GROUP, VERSION, POLICIES, namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False, metadata_only=True)
SERVICES = Resource("", "v1", "services", label_selector=MANAGED)
# Every HTTPRoute, not only Shepherd's: the routes are the user's; a cluster without the Gateway API
# CRDs serves none, and the informer stays empty.
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes")


Fingerprint = tuple[object, ...]


@dataclass
class Wakes:
    """Whom a change wakes: one Release, every Release, or every Release of a namespace."""

    release: Callable[[ReleaseKey], None]
    everyone: Callable[[], None]
    namespace: Callable[[str], None]


@dataclass
class Cache:
    releases: Store = field(default_factory=Store)
    deployments: Store = field(default_factory=lambda: Store(INSTANCE_LABEL))
    revisions: Store = field(default_factory=lambda: Store(INSTANCE_LABEL))
    jobs: Store = field(default_factory=lambda: Store(INSTANCE_LABEL))
    config_maps: Store = field(default_factory=lambda: Store(INSTANCE_LABEL))
    approvals: Store = field(default_factory=Store)
    policies: Store = field(default_factory=Store)
    namespaces: Store = field(default_factory=Store)
    services: Store = field(default_factory=lambda: Store(INSTANCE_LABEL))
    routes: Store = field(default_factory=Store)
    informers: list[Informer] = field(default_factory=list)
    # Started on first need (a Release routed by Gateway API): a cluster without its CRDs is never asked.
    route_informers: list[Informer] = field(default_factory=list)
    _route_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Each Release's recorded revisions, parsed: by revision name, with the resourceVersion parsed.
    _parsed: dict[ReleaseKey, dict[str, tuple[str, RevisionContent]]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    watched: frozenset[str] | None = None  # the namespaces watched; None: all of them

    # --- reads ---------------------------------------------------------------------------------

    def release(self, key: ReleaseKey) -> dict[str, Any] | None:
        return self.releases.get(key.namespace, key.name)

    def owned_deployments(self, key: ReleaseKey, uid: str) -> dict[str, dict[str, Any]]:
        return _owned(self.deployments.labelled(key.namespace, key.name), uid)

    def owned_jobs(self, key: ReleaseKey, uid: str) -> dict[str, dict[str, Any]]:
        return _owned(self.jobs.labelled(key.namespace, key.name), uid)

    def owned_config_maps(self, key: ReleaseKey, uid: str) -> dict[str, dict[str, Any]]:
        return _owned(self.config_maps.labelled(key.namespace, key.name), uid)

    def recorded_revisions(self, key: ReleaseKey, uid: str) -> dict[int, RevisionContent]:
        """Parsed once per version: a record never changes, and parsing it is most of a reconcile's work.
        Only the records read now stay parsed: those deleted (beyond the history limit) are let go."""
        before = self._parsed.get(key, {})
        parsed: dict[str, tuple[str, RevisionContent]] = {}
        recorded = {}
        for name, item in _owned(self.revisions.labelled(key.namespace, key.name), uid).items():
            if isinstance(item.get("revision"), int):
                version = str((item.get("metadata") or {}).get("resourceVersion") or "")
                held = before.get(name)
                if held is None or held[0] != version:
                    held = (version, RevisionContent.from_dict(item.get("data") or {}))
                parsed[name] = held
                recorded[int(item["revision"])] = held[1]
        if parsed:
            self._parsed[key] = parsed
        else:
            self._parsed.pop(key, None)
        return recorded

    def owned_services(self, key: ReleaseKey, uid: str) -> dict[str, dict[str, Any]]:
        return _owned(self.services.labelled(key.namespace, key.name), uid)

    def fingerprint(
        self, key: ReleaseKey, releases: Iterable[tuple[str, str]], routes: Iterable[tuple[str, str]]
    ) -> Fingerprint | None:
        """The versions of everything a decision about `key` reads: the Release, what it owns, its
        namespace's approvals and labels, the policies, and the Releases and HTTPRoutes it named last time.
        Equal fingerprints: the same observations. None when the Release or one it depends on is not
        watched here (read from the API server on each pass instead)."""
        namespace, name = key.namespace, key.name
        version = self.releases.version(namespace, name)
        if not version:
            return None
        depended = []
        for other in releases:
            if self.watched is not None and other[0] not in self.watched:
                return None
            depended.append(self.releases.version(*other))
        return (
            version,
            self.deployments.changed_at(namespace, name),
            self.revisions.changed_at(namespace, name),
            self.jobs.changed_at(namespace, name),
            self.config_maps.changed_at(namespace, name),
            self.services.changed_at(namespace, name),
            self.approvals.namespace_changed_at(namespace),
            self.policies.stamp,
            self.namespaces.version("", namespace),
            tuple(self.routes.version(*route) for route in routes),
            tuple(depended),
        )

    def route(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.routes.get(namespace, name)

    def namespace_approvals(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.approvals.in_namespace(namespace))

    def all_policies(self) -> list[dict[str, Any]]:
        return list(self.policies.objects.values())

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        found = self.namespaces.get("", namespace) or {}
        return dict((found.get("metadata") or {}).get("labels") or {})

    # --- the operator's own writes ---------------------------------------------------------------

    def remember(self, written: Iterable[Written]) -> None:
        for write in written:
            store = self._stores().get(write.plural)
            if store is None:
                continue
            if write.deleted:
                store.remove(write.object)
            else:
                store.put(_kept(write.plural, write.object))

    def forget(self, key: ReleaseKey) -> None:
        """A Release gone: its copy (remembered as deleted, so that no older event brings it back) and its
        parsed revisions."""
        held = self.releases.get(key.namespace, key.name)
        if held is not None:
            self.releases.remove(held)
        self._parsed.pop(key, None)

    # --- the watches ---------------------------------------------------------------------------

    def watch(
        self,
        configuration: kubernetes.client.Configuration,
        namespaces: Collection[str],
        wakes: Wakes,
        route_changed: Callable[[tuple[str, str]], None] = lambda _key: None,
        release_changed: Changed = lambda _old, _new: None,
        limits: Limits | None = None,
    ) -> Connection:
        """Make the informers (per namespace when the operator serves only some); `run` starts them.
        `release_changed` is told of each Release's change (old, new; None: absent, i.e. gone)."""
        connection = Connection(configuration)
        self.limits = limits or self.limits
        self.watched = frozenset(namespaces) or None
        self.informers = []
        scopes: list[str | None] = list(namespaces) or [None]

        def owner_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
            for obj in (old, new):
                if (key := owning_release(obj)) is not None:
                    wakes.release(key)

        def approval_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
            for obj in (old, new):
                if (key := approved_release(obj)) is not None:
                    wakes.release(key)

        def labels_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
            if _labels(old) != _labels(new):
                wakes.namespace(str(((new or old or {}).get("metadata") or {}).get("name") or ""))

        def everyone(_old: Mapping[str, Any] | None, _new: Mapping[str, Any] | None) -> None:
            wakes.everyone()

        def route(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
            meta = (new or old or {}).get("metadata") or {}
            route_changed((str(meta.get("namespace") or ""), str(meta.get("name") or "")))

        def informer(resource: Resource, store: Store, changed: Changed, scope: str | None) -> Informer:
            return Informer(
                connection,
                resource,
                store,
                scope,
                changed=changed,
                relisted=wakes.everyone,
                idle_seconds=self.limits.watch_idle_seconds,
            )

        def add(resource: Resource, store: Store, changed: Changed, scope: str | None) -> None:
            self.informers.append(informer(resource, store, changed, scope))

        for scope in scopes:
            add(RELEASES, self.releases, release_changed, scope)
            add(DEPLOYMENTS, self.deployments, owner_changed, scope)
            add(REVISIONS, self.revisions, _nothing, scope)
            add(JOBS, self.jobs, owner_changed, scope)
            add(CONFIG_MAPS, self.config_maps, _nothing, scope)
            add(APPROVAL_OBJECTS, self.approvals, approval_changed, scope)
            add(SERVICES, self.services, _nothing, scope)
        self.route_informers = [informer(HTTP_ROUTES, self.routes, route, scope) for scope in scopes]
        add(POLICY_OBJECTS, self.policies, everyone, None)
        add(NAMESPACES, self.namespaces, labels_changed, None)
        return connection

    async def run(self, synced: asyncio.Event | None = None) -> None:
        """Run every informer until cancelled; `synced` is set once each has listed."""
        tasks = [asyncio.create_task(informer.run()) for informer in self.informers]
        try:
            await asyncio.gather(*(informer.synced.wait() for informer in self.informers))
            if synced is not None:
                synced.set()
            await asyncio.gather(*tasks)
        finally:
            tasks.extend(self._route_tasks)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def watching_routes(self) -> None:
        """Start following HTTPRoutes (once), and return when they have been listed; NotFilled if that
        takes longer than the unready limit (the pass fails, and is tried again)."""
        if not self._route_tasks:
            self._route_tasks = [asyncio.create_task(i.run()) for i in self.route_informers]
        within = self.limits.unready_after_seconds
        try:
            await asyncio.wait_for(
                asyncio.gather(*(informer.synced.wait() for informer in self.route_informers)), within
            )
        except TimeoutError:
            behind = [i.problem(0.0) or i.where() for i in self.route_informers if not i.synced.is_set()]
            raise NotFilled(f"HTTPRoutes not listed within {within:g}s: {'; '.join(behind)}") from None

    def problems(self, after: float) -> list[str]:
        """Why each informer running is behind, for those that have been for `after` seconds or more."""
        running = [*self.informers, *(self.route_informers if self._route_tasks else ())]
        return [problem for informer in running if (problem := informer.problem(after)) is not None]

    def requests(self) -> int:
        """Lists and watches made so far."""
        return sum(i.lists + i.watches for i in (*self.informers, *self.route_informers))

    def _stores(self) -> dict[str, Store]:
        return {
            PLURAL: self.releases,
            DEPLOYMENTS.plural: self.deployments,
            REVISIONS.plural: self.revisions,
            JOBS.plural: self.jobs,
            CONFIG_MAPS.plural: self.config_maps,
            SERVICES.plural: self.services,
            HTTP_ROUTES.plural: self.routes,
        }


class NotFilled(Exception):
    """What a pass needs from the cache has not been listed in time."""


def owning_release(obj: Mapping[str, Any] | None) -> ReleaseKey | None:
    """The Release whose child `obj` is, by its instance label."""
    meta = (obj or {}).get("metadata") or {}
    release = (meta.get("labels") or {}).get(INSTANCE_LABEL)
    return ReleaseKey(str(meta["namespace"]), str(release)) if release and meta.get("namespace") else None


def approved_release(obj: Mapping[str, Any] | None) -> ReleaseKey | None:
    """The Release a ReleaseApproval names."""
    namespace = ((obj or {}).get("metadata") or {}).get("namespace")
    release = ((obj or {}).get("spec") or {}).get("release")
    return ReleaseKey(str(namespace), str(release)) if release and namespace else None


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _nothing(_old: Mapping[str, Any] | None, _new: Mapping[str, Any] | None) -> None:
    """Recorded revisions, ConfigMaps and managed Services change only by the operator's own writes."""


def _kept(plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": obj.get("metadata") or {}} if plural == CONFIG_MAPS.plural else obj


def _owned(objects: Iterable[dict[str, Any]], uid: str) -> dict[str, dict[str, Any]]:
    return {
        str(obj["metadata"]["name"]): obj
        for obj in objects
        if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
    }
