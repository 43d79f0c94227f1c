"""Pods without kubelets: the one simulated part of the real control plane.

`PodSimulator` registers Nodes, binds every pending pod to one of them (`pods/binding`, as a scheduler
would) and moves each bound pod through its life by writing `pods/status`, as a kubelet would: running
and ready after `delay`, never ready, crash-looping, or, for a Job's pod, succeeded or failed. A pod
being deleted is removed at once, as a kubelet does once its containers stopped. The real deployment,
replicaset and job controllers then compute Deployment, ReplicaSet and Job status themselves.

What a pod does is, in order of precedence: an override set with `set_behaviour()` for its Deployment or
Job, the pod annotation `kubelet.shepherd.dev/behaviour` (so a manifest can ask for a broken version), or
the default: `ready`, `succeed` for a Job's pod. A pod that needs a ConfigMap its namespace lacks (not
`optional`) waits in CreateContainerConfigError until the ConfigMap exists, as under a real kubelet.
Pod IPs are only written to status; nothing ever connects to them.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import kubernetes
import urllib3

from shepherd.core.config import referenced_config_maps
from shepherd.kube import load_configuration
from shepherd.lab.kubelet import BEHAVIOUR_ANNOTATION, DEPLOYMENT_BEHAVIOURS, JOB_BEHAVIOURS

Json = dict[str, Any]
PodKey = tuple[str, str]  # namespace, name
OwnerKey = tuple[str, str, str]  # kind (Deployment or Job), namespace, name

CONFIG_RECHECK = 0.5  # seconds between looks for a missing ConfigMap
WATCH_TIMEOUT = 300  # seconds a watch stays open before it is renewed
CRASH_RESTARTS = 3
FAILED_RESTARTS = 1000  # more restarts than any Job's backoffLimit allows

logger = logging.getLogger(__name__)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(pod: Mapping[str, Any]) -> OwnerKey | None:
    """The Deployment or Job whose pod this is, from the labels their controllers put on pods."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    namespace = metadata.get("namespace", "")
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if job:
        return ("Job", namespace, job)
    template_hash = labels.get("pod-template-hash")
    for reference in metadata.get("ownerReferences") or []:
        suffix = f"-{template_hash}"
        if reference.get("kind") == "ReplicaSet" and template_hash and reference["name"].endswith(suffix):
            return ("Deployment", namespace, reference["name"][: -len(suffix)])
    return None


def pod_status(pod: Mapping[str, Any], behaviour: str, started_at: datetime.datetime, ip: str) -> Json:
    """The status a kubelet reports for a pod whose containers behave as asked."""
    spec = pod.get("spec") or {}
    since = rfc3339(started_at)
    restarts = CRASH_RESTARTS if behaviour == "crash" else 0
    ready = behaviour in ("ready", "running")

    def container(c: Mapping[str, Any]) -> Json:
        status: Json = {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "restartCount": restarts,
            "ready": ready,
            "started": behaviour in ("ready", "running", "never-ready"),
        }
        if behaviour == "succeed":
            status["state"] = {
                "terminated": {"exitCode": 0, "reason": "Completed", "startedAt": since, "finishedAt": since}
            }
        elif behaviour == "fail" and spec.get("restartPolicy") != "OnFailure":
            status["state"] = {
                "terminated": {"exitCode": 1, "reason": "Error", "startedAt": since, "finishedAt": since}
            }
        elif behaviour in ("crash", "fail"):
            # OnFailure restarts in place: the job controller counts the restarts against backoffLimit.
            status["restartCount"] = restarts if behaviour == "crash" else FAILED_RESTARTS
            status["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}}
            status["lastState"] = {
                "terminated": {"exitCode": 1, "reason": "Error", "startedAt": since, "finishedAt": since}
            }
        else:
            status["state"] = {"running": {"startedAt": since}}
        return status

    containers = [container(c) for c in spec.get("containers") or []]
    if behaviour == "succeed":
        phase, reason = "Succeeded", "PodCompleted"
    elif behaviour == "fail" and spec.get("restartPolicy") != "OnFailure":
        phase, reason = "Failed", "PodFailed"
    else:
        phase, reason = "Running", "" if ready else "ContainersNotReady"
    finished = phase in ("Succeeded", "Failed")
    condition_ready = "True" if ready else "False"
    conditions = [
        _condition("PodReadyToStartContainers", "False" if finished else "True", since),
        _condition("Initialized", "True", since),
        _condition("Ready", condition_ready, since, reason),
        _condition("ContainersReady", condition_ready, since, reason),
        _condition("PodScheduled", "True", since),
    ]
    return {
        "phase": phase,
        "conditions": conditions,
        "hostIP": "10.240.0.1",
        "hostIPs": [{"ip": "10.240.0.1"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": since,
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    }


def waiting_for_config_status(pod: Mapping[str, Any], missing: set[str], ip: str) -> Json:
    message = f'configmap "{sorted(missing)[0]}" not found'
    containers = [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "restartCount": 0,
            "ready": False,
            "started": False,
            "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}},
        }
        for c in (pod.get("spec") or {}).get("containers") or []
    ]
    return {"phase": "Pending", "podIP": ip, "podIPs": [{"ip": ip}], "containerStatuses": containers}


def _condition(kind: str, status: str, since: str, reason: str = "") -> Json:
    condition = {"type": kind, "status": status, "lastTransitionTime": since, "lastProbeTime": None}
    if reason:
        condition["reason"] = reason
    return condition


class PodSimulator:
    """Plays `nodes` kubelets for the API server of `kubeconfig` (needs rights over nodes and pods)."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        context: str | None = None,
        nodes: int = 3,
        delay: float = 0.0,
        workers: int = 1,
    ) -> None:
        """`workers`: threads writing bindings and statuses; thousands of pods at once need several, as a
        cluster has many kubelets."""
        self.delay = delay
        self.workers = workers
        self.node_names = [f"sim-node-{i}" for i in range(nodes)]
        self._client = kubernetes.client.ApiClient(load_configuration(str(kubeconfig), context))
        self._core: Any = kubernetes.client.CoreV1Api(self._client)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._due: list[tuple[float, int, PodKey]] = []
        self._sequence = itertools.count()
        self._pods: dict[PodKey, Json] = {}
        self._first_seen: dict[str, tuple[float, datetime.datetime]] = {}
        self._written: dict[PodKey, Json] = {}
        self._ips: dict[str, str] = {}
        self._overrides: dict[OwnerKey, str] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_node = itertools.cycle(self.node_names)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._register_nodes()
        listed = threading.Event()
        workers = [(self._work, f"podsim-work-{i}") for i in range(self.workers)]
        for target, name in ((lambda: self._watch(listed), "podsim-watch"), *workers):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not listed.wait(30):
            raise RuntimeError("the pod simulator could not list pods within 30 s")

    def stop(self) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=2)
        self._client.close()  # type: ignore[no-untyped-call]

    def set_behaviour(self, kind: str, namespace: str, name: str, behaviour: str | None) -> None:
        """Make the pods of Deployment or Job namespace/name behave as asked (None: as they would)."""
        allowed = DEPLOYMENT_BEHAVIOURS if kind == "Deployment" else JOB_BEHAVIOURS
        if behaviour is not None and behaviour not in allowed:
            raise ValueError(f"a {kind}'s pods can be {', '.join(allowed)}, not {behaviour!r}")
        with self._wake:
            if behaviour is None:
                self._overrides.pop((kind, namespace, name), None)
            else:
                self._overrides[(kind, namespace, name)] = behaviour
            for key, pod in self._pods.items():
                if owner_of(pod) == (kind, namespace, name):
                    self._schedule(key, time.monotonic())

    def _register_nodes(self) -> None:
        for name in self.node_names:
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"type": "sim"}}}
            try:
                self._core.create_node(node)
            except kubernetes.client.ApiException as error:
                if error.status != 409:
                    raise
            now = rfc3339(datetime.datetime.now(datetime.UTC))
            status = {
                "status": {
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                    "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "simulated by shepherd.lab.podsim",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                    "addresses": [{"type": "Hostname", "address": name}],
                }
            }
            self._core.patch_node_status(name, status)

    def _watch(self, listed: threading.Event) -> None:
        resource_version = ""
        while not self._stopping.is_set():
            try:
                if not resource_version:
                    answer = self._core.list_pod_for_all_namespaces(_preload_content=False)
                    document = json.loads(answer.data)
                    with self._wake:
                        self._pods.clear()
                        for pod in document.get("items") or []:
                            self._see(pod)
                    resource_version = document["metadata"]["resourceVersion"]
                    listed.set()
                stream = kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self._core.list_pod_for_all_namespaces,
                    resource_version=resource_version,
                    timeout_seconds=WATCH_TIMEOUT,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    if self._stopping.is_set():
                        return
                    pod = event["raw_object"]
                    resource_version = pod["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    with self._wake:
                        if event["type"] == "DELETED":
                            self._forget(pod)
                        else:
                            self._see(pod)
            except kubernetes.client.ApiException as error:
                if error.status == 410:
                    resource_version = ""
                    continue
                logger.warning("pod watch failed: %s; watching again", error)
                self._stopping.wait(0.5)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                if self._stopping.is_set():
                    return
                logger.warning("pod watch cut: %s; watching again", error)
                self._stopping.wait(0.5)

    def _see(self, pod: Json) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self._pods[key] = pod
        self._schedule(key, time.monotonic())

    def _forget(self, pod: Json) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self._pods.pop(key, None)
        self._written.pop(key, None)
        self._first_seen.pop(pod["metadata"]["uid"], None)
        self._ips.pop(pod["metadata"]["uid"], None)

    def _schedule(self, key: PodKey, at: float) -> None:
        heapq.heappush(self._due, (at, next(self._sequence), key))
        self._wake.notify()

    def _work(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                while not self._stopping.is_set() and (not self._due or self._due[0][0] > time.monotonic()):
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._wake.wait(timeout)
                if self._stopping.is_set():
                    return
                _, _, key = heapq.heappop(self._due)
                pod = self._pods.get(key)
            if pod is not None:
                try:
                    self._act(key, pod)
                except kubernetes.client.ApiException as error:
                    if error.status not in (404, 409):
                        logger.warning("pod %s/%s: %s", key[0], key[1], error.reason)
                    with self._wake:
                        if key in self._pods:
                            self._schedule(key, time.monotonic() + 0.2)
                except (urllib3.exceptions.HTTPError, OSError) as error:
                    logger.warning("pod %s/%s: %s", key[0], key[1], error)
                    with self._wake:
                        self._schedule(key, time.monotonic() + 0.5)

    def _act(self, key: PodKey, pod: Json) -> None:
        metadata, spec = pod["metadata"], pod.get("spec") or {}
        if metadata.get("deletionTimestamp"):
            # A kubelet removes the pod once its containers stopped; these stop at once.
            self._core.delete_namespaced_pod(key[1], key[0], grace_period_seconds=0)
            return
        if not spec.get("nodeName"):
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": key[1], "namespace": key[0]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": next(self._next_node)},
            }
            self._core.create_namespaced_binding(key[0], binding, _preload_content=False)
            return
        uid = metadata["uid"]
        now = time.monotonic()
        first_seen, started_at = self._first_seen.setdefault(uid, (now, datetime.datetime.now(datetime.UTC)))
        ip = self._ips.setdefault(uid, f"10.244.{len(self._ips) // 250 % 250}.{len(self._ips) % 250 + 2}")
        if now < first_seen + self.delay:
            with self._wake:
                self._schedule(key, first_seen + self.delay)
            return
        missing = self._missing_config_maps(key[0], spec)
        if missing:
            status = waiting_for_config_status(pod, missing, ip)
            with self._wake:
                self._schedule(key, now + CONFIG_RECHECK)
        else:
            status = pod_status(pod, self._behaviour(pod), started_at, ip)
        if self._written.get(key) == status:
            return
        self._core.patch_namespaced_pod_status(key[1], key[0], {"status": status})
        self._written[key] = status

    def _behaviour(self, pod: Json) -> str:
        owner = owner_of(pod)
        is_job = owner is not None and owner[0] == "Job"
        allowed = JOB_BEHAVIOURS if is_job else DEPLOYMENT_BEHAVIOURS
        with self._wake:
            override = self._overrides.get(owner) if owner is not None else None
        annotated = ((pod["metadata"].get("annotations") or {}).get(BEHAVIOUR_ANNOTATION)) or None
        if annotated is not None and annotated not in allowed:
            logger.warning(
                "unknown %s %r on pod %s", BEHAVIOUR_ANNOTATION, annotated, pod["metadata"]["name"]
            )
            annotated = None
        return override or annotated or allowed[0]

    def _missing_config_maps(self, namespace: str, spec: Mapping[str, Any]) -> set[str]:
        needed = referenced_config_maps({"spec": spec}, required_only=True)
        missing = set()
        for name in needed:
            try:
                self._core.read_namespaced_config_map(name, namespace, _preload_content=False)
            except kubernetes.client.ApiException as error:
                if error.status != 404:
                    raise
                missing.add(name)
        return missing
