"""Watch-fed stores: one list, then a watch from its resourceVersion, kept in memory while it runs.

A reconcile reads from these stores and never from the API server, so an idle Release costs no request:
only the watches stay open. Each store keeps, per object, the newest version seen (resourceVersions of
one resource compare as integers since Kubernetes 1.35, KEP-5504), whether it came from the watch or from
the response of the operator's own write; so a reconcile never sees an object older than its own write,
even before the watch has echoed it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import kubernetes.client

logger = logging.getLogger(__name__)

WATCH_SECONDS = (240, 360)  # a watch ends and resumes at a random time in this range, as client-go's do
LIST_PAGE = 500
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0
METADATA_ONLY_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"

ObjectKey = tuple[str, str]  # namespace ("" when cluster-scoped), name


def newer(candidate: str, than: str) -> bool:
    """Whether resourceVersion `candidate` is later than `than`; a version that is not a number (a server
    older than 1.35 may send one) counts as later, as the watch delivers changes in order."""
    if not (candidate.isdigit() and than.isdigit()):
        return candidate != than
    return int(candidate) > int(than)


def version_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what is never read here and is often its largest part: metadata.managedFields,
    and the copy of the whole manifest that `kubectl apply` keeps in an annotation. `obj` is unchanged."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    annotations = meta.get("annotations")
    applied = isinstance(annotations, dict) and LAST_APPLIED in annotations
    if "managedFields" not in meta and not applied:
        return obj
    kept = {k: v for k, v in meta.items() if k != "managedFields"}
    if applied and isinstance(annotations, dict):
        kept["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**obj, "metadata": kept}


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def pack(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def unpack(packed: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(packed)
    return result


@dataclass
class Store:
    """The newest known version of every object of one resource, indexed by namespace and one label.

    Each object is kept as compact JSON and decoded on every read: a fifth of the memory of the decoded
    object, thousands of them at rest; and a reader gets its own copy, which nothing else changes."""

    index_label: str | None = None
    _packed: dict[ObjectKey, bytes] = field(default_factory=dict)
    _versions: dict[ObjectKey, str] = field(default_factory=dict)
    _labels: dict[ObjectKey, str] = field(default_factory=dict)  # the index label's value, where set
    # A deletion seen or made, by the version it removed: an older event for that object is stale.
    _deleted: dict[ObjectKey, str] = field(default_factory=dict)
    _by_index: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _by_namespace: dict[str, set[str]] = field(default_factory=dict)

    @property
    def objects(self) -> dict[ObjectKey, dict[str, Any]]:
        """Every object, decoded."""
        return {key: unpack(packed) for key, packed in self._packed.items()}

    def snapshot(self) -> dict[ObjectKey, bytes]:
        return dict(self._packed)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        packed = self._packed.get((namespace, name))
        return unpack(packed) if packed is not None else None

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return [unpack(self._packed[(namespace, n)]) for n in sorted(self._by_namespace.get(namespace, ()))]

    def labelled(self, namespace: str, value: str) -> list[dict[str, Any]]:
        """Objects in `namespace` whose index label has `value`."""
        names = sorted(self._by_index.get((namespace, value), ()))
        return [unpack(self._packed[(namespace, n)]) for n in names]

    def put(self, obj: dict[str, Any]) -> bool:
        """Keep `obj` unless a newer version (or its deletion) is known. False when `obj` is stale; True
        when it is the newest known, including the echo of a version already held (a write's own)."""
        obj = trimmed(obj)
        key = key_of(obj)
        version = version_of(obj)
        removed = self._deleted.get(key)
        if removed is not None:
            if not newer(version, removed):
                return False
            del self._deleted[key]  # created again
        current = self._versions.get(key)
        if current is not None and not newer(version, current):
            return version == current
        self._unindex(key)
        self._packed[key] = pack(obj)
        self._versions[key] = version
        self._index(key, obj)
        return True

    def remove(self, obj: Mapping[str, Any]) -> bool:
        """Forget `obj`, deleted at its version, unless a newer version is known (then False)."""
        key = key_of(obj)
        version = version_of(obj)
        current = self._versions.get(key)
        if current is not None and version and newer(current, version):
            return False
        self._unindex(key)
        if version:
            self._deleted[key] = version
        return True

    def replace(self, listed: Iterable[dict[str, Any]], list_version: str) -> None:
        """Take a fresh list at `list_version`, keeping what was written after it."""
        fresh = {key_of(obj): obj for obj in listed}
        for key, version in list(self._versions.items()):
            if key not in fresh and not newer(version, list_version):
                self._unindex(key)
        self._deleted = {k: v for k, v in self._deleted.items() if newer(v, list_version)}
        for obj in fresh.values():
            self.put(obj)

    def _index(self, key: ObjectKey, obj: Mapping[str, Any]) -> None:
        namespace, name = key
        self._by_namespace.setdefault(namespace, set()).add(name)
        if self.index_label is None:
            return
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(self.index_label)
        if value is not None:
            self._labels[key] = str(value)
            self._by_index.setdefault((namespace, str(value)), set()).add(name)

    def _unindex(self, key: ObjectKey) -> None:
        """Forget the object at `key` and its index entries (nothing when none is held)."""
        if self._packed.pop(key, None) is None:
            return
        del self._versions[key]
        namespace, name = key
        self._drop(self._by_namespace, namespace, name)
        value = self._labels.pop(key, None)
        if value is not None:
            self._drop(self._by_index, (namespace, value), name)

    @staticmethod
    def _drop(index: dict[Any, set[str]], key: Any, name: str) -> None:
        entries = index.get(key)
        if entries is not None:
            entries.discard(name)
            if not entries:
                del index[key]


@dataclass(frozen=True)
class Resource:
    """What one informer lists and watches."""

    group: str
    version: str
    plural: str
    namespaced: bool = True
    label_selector: str = ""
    metadata_only: bool = False  # keep names, labels and owners only (a ConfigMap's data can be a MiB)

    def path(self, namespace: str | None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{scope}/{self.plural}"


class Expired(Exception):
    """The watch's resourceVersion is too old to resume from (410): list again."""


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


Changed = Callable[[Mapping[str, Any] | None, Mapping[str, Any] | None], None]  # old, new (None: absent)


class Connection:
    """An aiohttp session with the operator's credentials, for the watches."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        auth = None
        if configuration.username:
            auth = aiohttp.BasicAuth(configuration.username, configuration.password or "")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0), auth=auth, timeout=aiohttp.ClientTimeout()
        )

    def headers(self, accept: str) -> dict[str, str]:
        # Asked for on every request: an in-cluster token is re-read from its file when it is renewed.
        config = self.configuration
        token = config.get_api_key_with_prefix("authorization") or config.get_api_key_with_prefix(
            "BearerToken"
        )
        headers = {"Accept": accept}
        if token:
            headers["Authorization"] = token
        return headers

    async def close(self) -> None:
        await self.session.close()


@dataclass
class Informer:
    """Lists, then watches, one resource in one namespace (or all), into a store; calls `changed` for each
    object whose newest version changed, and `relisted` after a list that replaced the store."""

    connection: Connection
    resource: Resource
    store: Store
    namespace: str | None = None
    changed: Changed = lambda old, new: None
    relisted: Callable[[], None] = lambda: None
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    lists: int = 0  # requests made, for the benchmarks and tests
    watches: int = 0

    async def run(self) -> None:
        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._list()
                    self.synced.set()
                    self.relisted()
                version = await self._watch(version)
                failures = 0
            except Expired:
                version = None
            except APIError as error:
                if error.status != 404:
                    failures = await self._back_off(failures, error)
                    continue
                # The resource is not served (its CRD is not installed): there is none of it, until it is.
                self.store.replace([], "")
                self.synced.set()
                version = None
                await asyncio.sleep(MAX_RETRY_SECONDS)
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                failures = await self._back_off(failures, error)

    async def _back_off(self, failures: int, error: Exception) -> int:
        delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**failures) + random.uniform(
            0, FIRST_RETRY_SECONDS
        )
        logger.warning("watch of %s failed (%s); again in %.1fs", self._where(), error, delay)
        await asyncio.sleep(delay)
        return failures + 1

    async def _list(self) -> str:
        objects: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": str(LIST_PAGE)}
        if self.resource.label_selector:
            params["labelSelector"] = self.resource.label_selector
        accept = METADATA_ONLY_LIST if self.resource.metadata_only else "application/json"
        while True:
            self.lists += 1
            body = await self._get(params, accept)
            objects.extend(self._kept(item) for item in body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                break
            params["continue"] = token
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        old = self.store.snapshot()
        self.store.replace(objects, version)
        new = self.store.snapshot()
        for key in old.keys() | new.keys():
            before, after = old.get(key), new.get(key)
            if before != after:
                self.changed(
                    unpack(before) if before is not None else None,
                    unpack(after) if after is not None else None,
                )
        return version

    async def _watch(self, version: str) -> str:
        """Follow changes from `version` until the server ends the watch; returns the version reached."""
        params = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(random.randint(*WATCH_SECONDS)),
        }
        if self.resource.label_selector:
            params["labelSelector"] = self.resource.label_selector
        accept = METADATA_ONLY if self.resource.metadata_only else "application/json"
        self.watches += 1
        url = f"{self.connection.host}{self.resource.path(self.namespace)}?{urlencode(params)}"
        # Past the server's own end of the watch, the connection is dead without having said so.
        limit = aiohttp.ClientTimeout(total=int(params["timeoutSeconds"]) + 60, sock_connect=30)
        async with self.connection.session.get(
            url, headers=self.connection.headers(accept), timeout=limit
        ) as response:
            if response.status == 410:
                raise Expired()
            if response.status != 200:
                raise APIError(response.status, await response.text())
            async for line in _lines(response.content):
                version = self._apply(json.loads(line), version)
        return version

    def _apply(self, event: Mapping[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired()
            raise APIError(int(obj.get("code") or 500), str(obj.get("message") or obj))
        reached = version_of(obj) or version
        if kind == "BOOKMARK":
            return reached
        kept = self._kept(obj)
        before = self.store.get(*key_of(kept))
        # Echoes of the operator's own writes count too: the Release decides again once the server has
        # them, as the write's answer alone does not wake it.
        if kind == "DELETED":
            if self.store.remove(kept):
                self.changed(before or kept, None)
        elif self.store.put(kept):
            self.changed(before, kept)
        return reached

    def _kept(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.resource.metadata_only:
            return {"metadata": obj.get("metadata") or {}}
        return obj

    async def _get(self, params: Mapping[str, str], accept: str) -> dict[str, Any]:
        url = f"{self.connection.host}{self.resource.path(self.namespace)}?{urlencode(params)}"
        async with self.connection.session.get(
            url, headers=self.connection.headers(accept), timeout=aiohttp.ClientTimeout(total=60)
        ) as response:
            if response.status == 410:
                raise Expired()
            if response.status != 200:
                raise APIError(response.status, await response.text())
            body: dict[str, Any] = await response.json(content_type=None)
            return body

    def _where(self) -> str:
        return f"{self.resource.plural} in {self.namespace}" if self.namespace else self.resource.plural


async def _lines(stream: aiohttp.StreamReader) -> Any:
    """The lines of a watch stream, however long (an object can exceed aiohttp's line limit)."""
    buffer = b""
    async for chunk in stream.iter_any():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer
