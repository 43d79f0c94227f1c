"""Everything a reconcile reads, from watches: Releases (fed by Kopf's own watch), and the Deployments,
ControllerRevisions, Jobs, ConfigMaps (metadata only), ReleaseApprovals, ReleasePolicies and Namespaces
the operator's informers keep.

The responses of the operator's own writes go in too (`remember`), so the next decision never runs on a
version older than what this operator wrote, even before the watch echoes it.
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
from shepherd.informers import Connection, Informer, Resource, Store
from shepherd.kube import APPROVALS, GROUP, PLURAL, POLICIES, VERSION, ReleaseKey, Written

MANAGED = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
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
    _parsed: dict[tuple[str, str], tuple[str, RevisionContent]] = field(default_factory=dict)

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
        recorded = {}
        for name, item in _owned(self.revisions.labelled(key.namespace, key.name), uid).items():
            if isinstance(item.get("revision"), int):
                recorded[int(item["revision"])] = self._content(key.namespace, name, item)
        return recorded

    def owned_services(self, key: ReleaseKey, uid: str) -> dict[str, dict[str, Any]]:
        return _owned(self.services.labelled(key.namespace, key.name), uid)

    def route(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.routes.get(namespace, name)

    def namespace_approvals(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.approvals.in_namespace(namespace))

    def all_policies(self) -> list[dict[str, Any]]:
        return list(self.policies.objects.values())

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        found = self.namespaces.get("", namespace) or {}
        return dict((found.get("metadata") or {}).get("labels") or {})

    def _content(self, namespace: str, name: str, item: Mapping[str, Any]) -> RevisionContent:
        """Parsed once per version: a record never changes, and parsing it is most of a reconcile's work."""
        version = str((item.get("metadata") or {}).get("resourceVersion") or "")
        parsed = self._parsed.get((namespace, name))
        if parsed is None or parsed[0] != version:
            parsed = self._parsed[(namespace, name)] = (
                version,
                RevisionContent.from_dict(item.get("data") or {}),
            )
        return parsed[1]

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

    # --- the watches ---------------------------------------------------------------------------

    def watch(
        self,
        configuration: kubernetes.client.Configuration,
        namespaces: Collection[str],
        wakes: Wakes,
        route_changed: Callable[[tuple[str, str]], None] = lambda _key: None,
    ) -> Connection:
        """Make the informers (per namespace when the operator serves only some); `run` starts them."""
        connection = Connection(configuration)
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

        def add(resource: Resource, store: Store, changed: Any, scope: str | None) -> None:
            self.informers.append(
                Informer(connection, resource, store, scope, changed=changed, relisted=wakes.everyone)
            )

        for scope in scopes:
            add(DEPLOYMENTS, self.deployments, owner_changed, scope)
            add(REVISIONS, self.revisions, _nothing, scope)
            add(JOBS, self.jobs, owner_changed, scope)
            add(CONFIG_MAPS, self.config_maps, _nothing, scope)
            add(APPROVAL_OBJECTS, self.approvals, approval_changed, scope)
            add(SERVICES, self.services, _nothing, scope)
        self.route_informers = [
            Informer(connection, HTTP_ROUTES, self.routes, scope, changed=route, relisted=wakes.everyone)
            for scope in scopes
        ]
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
        """Start following HTTPRoutes (once), and return when they have been listed."""
        if not self._route_tasks:
            self._route_tasks = [asyncio.create_task(i.run()) for i in self.route_informers]
        await asyncio.gather(*(informer.synced.wait() for informer in self.route_informers))

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
