"""A simulated kubelet and workload controllers, so that workloads behave on an API server without nodes.

Like envtest, the local API runs no kubelet, deployment controller or job controller: a Deployment never
becomes ready and a Job never finishes. `KubeletSimulator` watches Deployments and Jobs in all namespaces
through the HTTP API, as a real controller does, and writes their `/status` the way those controllers
would for pods that start fine, never get ready, crash-loop, complete or fail.

What each workload does is, in order of precedence: an override set at runtime with `set_behaviour()`,
the pod template annotation `kubelet.shepherd.dev/behaviour` (so a manifest can ask for a broken version),
or the default: `ready` for Deployments, `succeed` for Jobs. Whatever is asked, the pods of a Deployment
that names a ConfigMap its namespace lacks (not `optional`) never get ready, as a real kubelet leaves them
in CreateContainerConfigError; so the simulator also follows ConfigMaps, keeping only their names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import aiohttp

from shepherd.core.config import referenced_config_maps

Json = dict[str, Any]
WorkloadKey = tuple[str, str, str]  # kind, namespace, name (ConfigMaps are keyed the same way)

BEHAVIOUR_ANNOTATION = "kubelet.shepherd.dev/behaviour"
DEPLOYMENT_BEHAVIOURS = ("ready", "never-ready", "crash")
JOB_BEHAVIOURS = ("succeed", "fail", "running")
RETRY_DELAY = 0.5  # seconds before watching again after the API could not be reached

logger = logging.getLogger(__name__)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, status: str, reason: str, message: str) -> Json:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def deployment_status(deployment: Json, behaviour: str, started: bool) -> Json:
    """The status the deployment controller reports for pods that behave as asked (zeros are omitted)."""
    replicas = deployment.get("spec", {}).get("replicas", 1)
    replica_set = f"{deployment['metadata']['name']}-{template_hash(deployment)}"
    # With no replicas, there is nothing to wait for: the deployment is available whatever its pods do.
    ready = replicas == 0 or (behaviour == "ready" and started)
    if ready:
        available = condition(
            "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
        )
        message = f'ReplicaSet "{replica_set}" has successfully progressed.'
        progressing = condition("Progressing", "True", "NewReplicaSetAvailable", message)
    else:
        message = "Deployment does not have minimum availability."
        available = condition("Available", "False", "MinimumReplicasUnavailable", message)
        progressing = (
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{replica_set}" has timed out progressing.',
            )
            if behaviour == "crash"
            else condition(
                "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{replica_set}" is progressing.'
            )
        )
    counts = {
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas if ready else 0,
        "availableReplicas": replicas if ready else 0,
        "unavailableReplicas": 0 if ready else replicas,
    }
    return {
        "observedGeneration": deployment["metadata"].get("generation"),
        **{field: count or None for field, count in counts.items()},
        "conditions": [available, progressing],
    }


def job_status(job: Json, behaviour: str, started: bool) -> Json:
    """The status the job controller reports for pods that behave as asked."""
    spec, status = job.get("spec", {}), job.get("status") or {}
    timestamp = now_rfc3339()
    running: Json = {"startTime": status.get("startTime") or timestamp, "active": 1, "ready": 1}
    if behaviour == "running" or not started:
        return running | {"completionTime": None, "succeeded": None, "failed": None, "conditions": None}
    if behaviour == "fail":
        message = "Job has reached the specified backoff limit"
        conditions = [
            condition("FailureTarget", "True", "BackoffLimitExceeded", message),
            condition("Failed", "True", "BackoffLimitExceeded", message),
        ]
        return running | {
            "active": None,
            "ready": None,
            "failed": spec.get("backoffLimit", 6) + 1,
            "conditions": conditions,
        }
    message = "Reached expected number of succeeded pods"
    conditions = [
        condition("SuccessCriteriaMet", "True", "CompletionsReached", message),
        condition("Complete", "True", "CompletionsReached", message),
    ]
    finished = {
        "completionTime": status.get("completionTime") or timestamp,
        "succeeded": spec.get("completions", 1),
    }
    return running | {"active": None, "ready": None, "failed": None, "conditions": conditions} | finished


def template_hash(workload: Json) -> str:
    template = json.dumps(workload.get("spec", {}).get("template", {}), sort_keys=True)
    return hashlib.sha256(template.encode()).hexdigest()[:10]


@dataclasses.dataclass(frozen=True)
class Workload:
    """A kind of workload the simulator drives: where it lives in the API and how its status follows."""

    kind: str
    collection: str
    behaviours: tuple[str, ...]
    status: Callable[[Json, str, bool], Json]
    condition_times: tuple[str, ...]

    def object_path(self, namespace: str, name: str) -> str:
        group_version, plural = self.collection.rsplit("/", 1)
        return f"{group_version}/namespaces/{namespace}/{plural}/{name}"


WORKLOADS = {
    "Deployment": Workload(
        "Deployment",
        "/apis/apps/v1/deployments",
        DEPLOYMENT_BEHAVIOURS,
        deployment_status,
        ("lastUpdateTime", "lastTransitionTime"),
    ),
    "Job": Workload(
        "Job", "/apis/batch/v1/jobs", JOB_BEHAVIOURS, job_status, ("lastProbeTime", "lastTransitionTime")
    ),
}


# Followed for their names only: what the pods of a Deployment need to start.
CONFIG_MAPS = "/api/v1/configmaps"
FOLLOWED = {**{kind: workload.collection for kind, workload in WORKLOADS.items()}, "ConfigMap": CONFIG_MAPS}


def differs(desired: Json, current: Json) -> bool:
    """Whether the status needs writing: its managed fields differ, timestamps aside."""

    def managed(status: Json) -> Json:
        conditions = [
            {k: v for k, v in c.items() if not k.endswith("Time")} for c in status.get("conditions") or []
        ]
        fields = [field for field in desired if not field.endswith("Time") and field != "conditions"]
        return {field: status.get(field) for field in fields} | {"conditions": conditions}

    return managed(desired) != managed(current)


def with_timestamps(desired: Json, current: Json, fields: tuple[str, ...]) -> Json:
    """The desired status with condition timestamps, kept from conditions whose status does not change."""
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    now = now_rfc3339()

    def stamped(new: Json) -> Json:
        # The transition time moves with the status; the other time moves with any change of the condition.
        old = previous.get(new["type"], {})
        unchanged = {
            field: old.get("status") == new["status"]
            if field == "lastTransitionTime"
            else all(old.get(k) == new[k] for k in ("status", "reason", "message"))
            for field in fields
        }
        return new | {field: old.get(field, now) if unchanged[field] else now for field in fields}

    return desired | {"conditions": [stamped(c) for c in desired.get("conditions") or []] or None}


class KubeletSimulator:
    """Makes Deployments ready (or not) and Jobs finish (or not), through the API at `url`.

    `delay` is how long (seconds) a new Deployment generation or scale takes to become ready with the
    `ready` behaviour, and how long a Job runs before it succeeds or fails.

    In an event loop: `async with KubeletSimulator(url): ...` (or `await start()` ... `await stop()`).
    With `LocalAPIThread`: `api.call(simulator.start())` and `api.call(simulator.stop())`.
    """

    def __init__(self, url: str, *, delay: float = 0.0) -> None:
        self.url = url.rstrip("/")
        self.delay = delay
        self._overrides: dict[WorkloadKey, str] = {}
        self._seen: dict[WorkloadKey, Json] = {}
        self._starting: dict[WorkloadKey, tuple[tuple[Any, ...], float]] = {}
        self._dirty: asyncio.Queue[WorkloadKey] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start in the running event loop; return once every workload that exists has been seen."""
        listed = asyncio.Event()
        self._loop, self._dirty = asyncio.get_running_loop(), asyncio.Queue()
        self._task = asyncio.create_task(self.run(listed))
        listing = asyncio.create_task(listed.wait())
        await asyncio.wait([self._task, listing], return_when=asyncio.FIRST_COMPLETED)
        listing.cancel()
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def set_behaviour(
        self, namespace: str, name: str, behaviour: str | None, *, kind: str = "Deployment"
    ) -> None:
        """Override what one workload does (None: back to its annotation or the default). Thread-safe."""
        if kind not in WORKLOADS or behaviour not in (None, *WORKLOADS[kind].behaviours):
            raise ValueError(f"unknown behaviour {behaviour!r} of a {kind}")
        key = (kind, namespace, name)
        if behaviour is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = behaviour
        if self._loop is not None and self._dirty is not None:
            self._loop.call_soon_threadsafe(self._dirty.put_nowait, key)

    async def run(self, listed: asyncio.Event | None = None) -> None:
        """Watch and write statuses until cancelled; `listed` is set once every kind has been listed."""
        if self._dirty is None:
            self._loop, self._dirty = asyncio.get_running_loop(), asyncio.Queue()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(base_url=self.url, timeout=timeout) as session:
            listings = [asyncio.Event() for _ in FOLLOWED]
            watchers = [
                self._follow(session, kind, collection, done)
                for (kind, collection), done in zip(FOLLOWED.items(), listings, strict=True)
            ]
            async with asyncio.TaskGroup() as group:
                for watcher in watchers:
                    group.create_task(watcher)
                group.create_task(self._write_statuses(session))
                for done in listings:
                    await done.wait()
                if listed is not None:
                    listed.set()

    # Following the API: list, then watch from the listed version; list again when that is too old.

    async def _follow(
        self, session: aiohttp.ClientSession, kind: str, collection: str, listed: asyncio.Event
    ) -> None:
        while True:
            try:
                version: str | None = await self._list(session, kind, collection)
                listed.set()
                while version is not None:
                    version = await self._watch(session, kind, collection, version)
            except (aiohttp.ClientError, ValueError) as error:  # ValueError: a stream cut mid-event
                logger.warning("Watching %ss failed, retrying: %s", kind, error)
                await asyncio.sleep(RETRY_DELAY)

    async def _list(self, session: aiohttp.ClientSession, kind: str, collection: str) -> str:
        async with session.get(collection) as response:
            response.raise_for_status()
            listing = await response.json()
        for key in [key for key in self._seen if key[0] == kind]:
            del self._seen[key]
        for item in listing["items"]:
            self._see(kind, item)
        version: str = listing["metadata"]["resourceVersion"]
        return version

    async def _watch(
        self, session: aiohttp.ClientSession, kind: str, collection: str, version: str
    ) -> str | None:
        """Follow the changes after `version`; the version to go on from, or None to list again."""
        params = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        async with session.get(collection, params=params) as response:
            response.raise_for_status()
            async for line in response.content:
                event = json.loads(line)
                if event["type"] == "ERROR":
                    return None
                version = event["object"]["metadata"].get("resourceVersion", version)
                if event["type"] == "DELETED":
                    self._forget(kind, event["object"])
                elif event["type"] != "BOOKMARK":
                    self._see(kind, event["object"])
        return version

    def _see(self, kind: str, obj: Json) -> None:
        key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if kind not in WORKLOADS:
            self._seen[key] = {"metadata": obj["metadata"]}
            self._wake_namespace(key[1])
            return
        self._seen[key] = obj
        if self._dirty is not None:
            self._dirty.put_nowait(key)

    def _forget(self, kind: str, obj: Json) -> None:
        key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        self._seen.pop(key, None)
        self._starting.pop(key, None)
        if kind not in WORKLOADS:
            self._wake_namespace(key[1])

    def _wake_namespace(self, namespace: str) -> None:
        """A ConfigMap came or went: the Deployments of its namespace may start, or stop being able to."""
        if self._dirty is not None:
            for key in self._seen:
                if key[0] == "Deployment" and key[1] == namespace:
                    self._dirty.put_nowait(key)

    # Writing statuses: one at a time, only when the status would change.

    async def _write_statuses(self, session: aiohttp.ClientSession) -> None:
        assert self._dirty is not None
        while True:
            key = await self._dirty.get()
            obj = self._seen.get(key)
            try:
                if obj is not None:
                    await self._reconcile(session, WORKLOADS[key[0]], key, obj)
            except aiohttp.ClientError as error:  # The next event of this workload tries again.
                logger.warning("Writing the status of %s %s/%s failed: %s", *key, error)

    async def _reconcile(
        self, session: aiohttp.ClientSession, workload: Workload, key: WorkloadKey, obj: Json
    ) -> None:
        behaviour = self._behaviour(workload, key, obj)
        current = obj.get("status") or {}
        desired = workload.status(obj, behaviour, self._started(key, obj))
        if not differs(desired, current):
            return
        patch = {"status": with_timestamps(desired, current, workload.condition_times)}
        headers = {"Content-Type": "application/merge-patch+json"}
        async with session.patch(
            f"{workload.object_path(*key[1:])}/status", json=patch, headers=headers
        ) as response:
            if response.status == 404:
                return  # Deleted meanwhile: its DELETED event is on the way.
            response.raise_for_status()
            written = await response.json()
        # Newer than what was seen, unless the watch brought a change meanwhile (then that one counts).
        if self._seen.get(key) is obj:
            self._seen[key] = written

    def _behaviour(self, workload: Workload, key: WorkloadKey, obj: Json) -> str:
        if workload.kind == "Deployment" and self._missing_config_maps(key[1], obj):
            return "never-ready"
        template_meta = obj.get("spec", {}).get("template", {}).get("metadata") or {}
        annotated = (template_meta.get("annotations") or {}).get(BEHAVIOUR_ANNOTATION)
        if annotated is not None and annotated not in workload.behaviours:
            logger.warning("Unknown %s on %s %s/%s", BEHAVIOUR_ANNOTATION, workload.kind, key[1], key[2])
            annotated = None
        return self._overrides.get(key) or annotated or workload.behaviours[0]

    def _missing_config_maps(self, namespace: str, obj: Json) -> set[str]:
        needed = referenced_config_maps(obj.get("spec", {}).get("template", {}), required_only=True)
        return {name for name in needed if ("ConfigMap", namespace, name) not in self._seen}

    def _started(self, key: WorkloadKey, obj: Json) -> bool:
        """Whether the current generation and scale have been up for `delay`; wakes the key up when due."""
        assert self._loop is not None and self._dirty is not None
        marker = (obj["metadata"].get("generation"), obj.get("spec", {}).get("replicas"))
        previous = self._starting.get(key)
        due = (
            previous[1] if previous is not None and previous[0] == marker else self._loop.time() + self.delay
        )
        self._starting[key] = (marker, due)
        if self._loop.time() >= due:
            return True
        self._loop.call_at(due, self._dirty.put_nowait, key)
        return False
