"""Watch-fed stores: one list, then a watch from its resourceVersion, kept in memory while it runs.

A reconcile reads from these stores and never from the API server, so an idle Release costs no request:
only the watches stay open. Each store keeps, per object, the newest version seen (resourceVersions of
one resource compare as integers since Kubernetes 1.35, KEP-5504), whether it came from the watch or from
the response of the operator's own write; so a reconcile never sees an object older than its own write,
even before the watch has echoed it.

Every informer is supervised: whatever fails (an error from the server, a connection lost, a watch that
says nothing for longer than its idle limit, a bug), it logs, backs off and lists or watches again; only
being cancelled ends it. It tells how long it has gone without a current view (`lagging`), which the
operator's /readyz and /healthz answer from.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import kubernetes.client

logger = logging.getLogger(__name__)

WATCH_SECONDS = (240, 360)  # a watch ends and resumes at a random time in this range, as client-go's do
WATCH_GRACE_SECONDS = 30  # past the server's own end of a watch, the connection is dead without saying so
IDLE_SECONDS = 90.0  # a watch silent this long is dead: the server sends a bookmark about every minute
LIST_PAGE = 500
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0
# A deletion is remembered this long: well past the slowest answer of a write made before it (its request's
# deadline), which must not bring the object back; a watch replaying older events brings the deletion too.
DELETIONS_KEPT_SECONDS = 300.0
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


K = TypeVar("K")
V = TypeVar("V")


def discard(index: dict[K, set[V]], key: K, member: V) -> None:
    """Take `member` out of the set at `key`, and the set out of `index` once it is empty."""
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]


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
    clock: Callable[[], float] = time.monotonic
    deletions_kept_seconds: float = DELETIONS_KEPT_SECONDS
    _packed: dict[ObjectKey, bytes] = field(default_factory=dict)
    _versions: dict[ObjectKey, str] = field(default_factory=dict)
    _labels: dict[ObjectKey, str] = field(default_factory=dict)  # the index label's value, where set
    # A deletion seen or made, by the version it removed, and when: an older event for that object is stale.
    # Oldest first, so that those past `deletions_kept_seconds` are dropped from the front.
    _deleted: dict[ObjectKey, tuple[str, float]] = field(default_factory=dict)
    _by_index: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _by_namespace: dict[str, set[str]] = field(default_factory=dict)
    # When each index entry and namespace last changed, on one counter that only grows: a pass compares these
    # stamps to tell in microseconds whether anything it decided on changed (see Cache.fingerprint).
    stamp: int = 0
    _changed: dict[tuple[str, str], int] = field(default_factory=dict)
    _namespace_changed: dict[str, int] = field(default_factory=dict)

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

    def version(self, namespace: str, name: str) -> str:
        """The resourceVersion held ("" for none), without decoding the object."""
        return self._versions.get((namespace, name), "")

    def changed_at(self, namespace: str, value: str) -> int:
        """The stamp of the last change among the objects of `namespace` whose index label has `value`
        (0: none is held)."""
        return self._changed.get((namespace, value), 0)

    def namespace_changed_at(self, namespace: str) -> int:
        return self._namespace_changed.get(namespace, 0)

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
            if not newer(version, removed[0]):
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
        self.expire()
        if version:
            self._deleted.pop(key, None)  # to the end: the newest deletion
            self._deleted[key] = (version, self.clock())
        return True

    def replace(self, listed: Iterable[dict[str, Any]], list_version: str) -> None:
        """Take a fresh list at `list_version`, keeping what was written after it."""
        fresh = {key_of(obj): obj for obj in listed}
        for key, version in list(self._versions.items()):
            if key not in fresh and not newer(version, list_version):
                self._unindex(key)
        # No event older than the list can come from the watch that follows it.
        self._deleted = {k: v for k, v in self._deleted.items() if newer(v[0], list_version)}
        for obj in fresh.values():
            self.put(obj)

    def expire(self) -> None:
        """Drop the deletions remembered longer than `deletions_kept_seconds`."""
        until = self.clock() - self.deletions_kept_seconds
        while self._deleted:
            key, (_version, at) = next(iter(self._deleted.items()))
            if at > until:
                return
            del self._deleted[key]

    def sizes(self) -> dict[str, int]:
        """Entries held, by what holds them: what the tests of forgetting and the soaks watch."""
        return {
            "objects": len(self._packed),
            "deletions": len(self._deleted),
            "labels": len(self._labels),
            "namespaces": len(self._by_namespace),
            "indexed": len(self._by_index),
            "stamps": len(self._changed) + len(self._namespace_changed),
        }

    def _index(self, key: ObjectKey, obj: Mapping[str, Any]) -> None:
        namespace, name = key
        self.stamp += 1
        self._by_namespace.setdefault(namespace, set()).add(name)
        self._namespace_changed[namespace] = self.stamp
        if self.index_label is None:
            return
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(self.index_label)
        if value is not None:
            self._labels[key] = str(value)
            self._by_index.setdefault((namespace, str(value)), set()).add(name)
            self._changed[(namespace, str(value))] = self.stamp

    def _unindex(self, key: ObjectKey) -> None:
        """Forget the object at `key` and its index entries (nothing when none is held)."""
        if self._packed.pop(key, None) is None:
            return
        del self._versions[key]
        namespace, name = key
        self.stamp += 1
        discard(self._by_namespace, namespace, name)
        self._restamp(self._namespace_changed, namespace, namespace in self._by_namespace)
        value = self._labels.pop(key, None)
        if value is not None:
            discard(self._by_index, (namespace, value), name)
            self._restamp(self._changed, (namespace, value), (namespace, value) in self._by_index)

    def _restamp(self, stamps: dict[Any, int], key: Any, held: bool) -> None:
        """A change; a key with nothing left under it is dropped: its absence reads as 0, held by nothing."""
        if held:
            stamps[key] = self.stamp
        else:
            stamps.pop(key, None)


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

    def __init__(self) -> None:
        super().__init__("HTTP 410: the resourceVersion is too old to watch from")


class APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status

    @classmethod
    async def of(cls, response: aiohttp.ClientResponse) -> APIError:
        """The server's answer: the message of its Status body, or the body itself."""
        text = await response.text()
        try:
            message = json.loads(text).get("message")
        except (ValueError, AttributeError):
            message = None
        return cls(response.status, str(message or text))


class Silent(Exception):
    """The watch sent neither an event nor a bookmark for longer than its idle limit."""


# What goes wrong with a watch in the normal run of things: logged in one line, resumed from where it was.
EXPECTED = (APIError, Expired, Silent, aiohttp.ClientError, TimeoutError, ValueError)

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
    idle_seconds: float = IDLE_SECONDS
    clock: Callable[[], float] = time.monotonic
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    lists: int = 0  # requests made, for the benchmarks and tests
    watches: int = 0
    events: int = 0  # events and bookmarks received
    # Its health, by `clock`: running since, listed last, failing since (None: it follows), and why.
    started_at: float | None = None
    listed_at: float | None = None
    failing_since: float | None = None
    last_error: str = ""

    async def run(self) -> None:
        """List and watch until cancelled; whatever else happens is logged and tried again."""
        version: str | None = None
        failures = 0
        self.started_at, self.failing_since = self.clock(), None
        try:
            heard = -1  # events (and bookmarks) heard by the time of the last list
            while True:
                try:
                    if version is None:
                        version = await self._list()
                        heard = self.events
                        self._following(listed=True)
                        self.synced.set()
                        self.relisted()
                    version = await self._watch(version)
                    failures = 0
                except Expired as error:
                    if self.events == heard:  # the version of a list just made, too old already: not normal
                        failures = await self._back_off(failures, error)
                    version = None
                except APIError as error:
                    if error.status != 404:
                        failures = await self._back_off(failures, error)
                        continue
                    # The resource is not served (its CRD is not installed): there is none of it, until it is.
                    self.store.replace([], "")
                    self._following(listed=True)
                    self.synced.set()
                    version = None
                    await asyncio.sleep(MAX_RETRY_SECONDS)
                except Exception as error:  # a dead connection, a silent watch, a bug: never the end
                    if not isinstance(error, EXPECTED):
                        version = None  # what went wrong may have left the store half-told: list afresh
                    failures = await self._back_off(failures, error)
        finally:
            self.started_at = None

    def lagging(self) -> float | None:
        """Seconds this informer has gone without a current view: since it began failing, or since it
        started if it never listed; None while it follows (or is not running)."""
        if self.started_at is None:
            return None
        if self.listed_at is None:
            return self.clock() - self.started_at
        if self.failing_since is None:
            return None
        return self.clock() - self.failing_since

    def problem(self, after: float) -> str | None:
        """Why this informer is behind, once it has been for `after` seconds."""
        lagging = self.lagging()
        if lagging is None or lagging < after:
            return None
        error = f": {self.last_error}" if self.last_error else ""
        return f"{self.where()}: no successful list or watch for {lagging:.0f}s{error}"

    def where(self) -> str:
        if not self.resource.namespaced:
            return self.resource.plural
        return f"{self.resource.plural} in {self.namespace or 'all namespaces'}"

    def _following(self, listed: bool = False) -> None:
        """A list answered, or a watch accepted: the view is current again."""
        if listed:
            self.listed_at = self.clock()
        self.failing_since, self.last_error = None, ""

    async def _back_off(self, failures: int, error: Exception) -> int:
        if self.failing_since is None:
            self.failing_since = self.clock()
        self.last_error = str(error) or type(error).__name__
        delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**failures) + random.uniform(
            0, FIRST_RETRY_SECONDS
        )
        expected = isinstance(error, EXPECTED)
        logger.warning(
            "watch of %s failed (%s); again in %.1fs",
            self.where(),
            self.last_error,
            delay,
            exc_info=None if expected else error,  # a bug: its traceback, then tried again like the rest
        )
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
        limit = aiohttp.ClientTimeout(
            total=int(params["timeoutSeconds"]) + WATCH_GRACE_SECONDS,
            sock_connect=WATCH_GRACE_SECONDS,
            sock_read=self.idle_seconds,  # each read: an event or a bookmark must come within it
        )
        async with self.connection.session.get(
            url, headers=self.connection.headers(accept), timeout=limit
        ) as response:
            if response.status == 410:
                raise Expired()
            if response.status != 200:
                raise await APIError.of(response)
            self._following()
            try:
                async for line in _lines(response.content):
                    version = self._apply(json.loads(line), version)
            except aiohttp.ServerTimeoutError:
                raise Silent(
                    f"no event or bookmark for {self.idle_seconds:g}s: the watch is opened again"
                ) from None
        return version

    def _apply(self, event: Mapping[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired()
            raise APIError(int(obj.get("code") or 500), str(obj.get("message") or obj))
        self.events += 1
        reached = version_of(obj) or version
        if kind == "BOOKMARK":
            self.store.expire()
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
                raise await APIError.of(response)
            body: dict[str, Any] = await response.json(content_type=None)
            return body


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
