"""What the stories share: the real kubectl, the operator's adapter for reads, and polling with deadlines."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client
import yaml

from shepherd.core.workloads import INSTANCE_LABEL
from shepherd.kube import KubeAPI, ReleaseKey
from shepherd.runner import OperatorThread
from story import QUICKSTART, REPO, quickstart_release, wait_event  # noqa: F401 (the stories import them from here)

DEFAULT_TIMEOUT = 45.0


def owned_deployments(api: KubeAPI, key: ReleaseKey, uid: str) -> dict[str, dict[str, Any]]:
    """The Deployments the Release owns, read from the API server (the operator reads them from its cache)."""
    apps: Any = kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(api.configuration))
    listed = apps.list_namespaced_deployment(
        key.namespace, label_selector=f"{INSTANCE_LABEL}={key.name}", _preload_content=False
    )
    items = json.loads(listed.data)["items"]
    owned = (d for d in items if any(r.get("uid") == uid for r in d["metadata"].get("ownerReferences") or []))
    return {d["metadata"]["name"]: d for d in owned}


class Cluster:
    def __init__(self, kubectl: Callable[..., subprocess.CompletedProcess[str]], api: KubeAPI) -> None:
        self.kubectl = kubectl
        self.api = api

    def apply(self, manifest: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(dict(manifest)))

    def release(self, name: str = "shop", namespace: str = "default") -> dict[str, Any]:
        release = self.api.get_release(ReleaseKey(namespace, name))
        assert release is not None, f"release {namespace}/{name} does not exist"
        return release

    def status(self, name: str = "shop") -> dict[str, Any]:
        return dict(self.release(name).get("status") or {})

    def deployments(self, name: str = "shop", namespace: str = "default") -> dict[str, dict[str, Any]]:
        uid = self.release(name, namespace)["metadata"]["uid"]
        return owned_deployments(self.api, ReleaseKey(namespace, name), uid)

    def replicas(self, name: str = "shop") -> dict[str, int]:
        return {n: d["spec"]["replicas"] for n, d in self.deployments(name).items()}

    def images(self, name: str = "shop") -> dict[str, str]:
        return {
            n: d["spec"]["template"]["spec"]["containers"][0]["image"]
            for n, d in self.deployments(name).items()
        }

    def wait_status(
        self,
        what: str,
        predicate: Callable[[Mapping[str, Any]], bool],
        name: str = "shop",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        """Poll the Release until the predicate holds; fail with the last status seen."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name)
            if predicate(status):
                return status
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; last status: {json.dumps(status)}"
        )

    def wait_phase(self, phase: str, name: str = "shop", revision: int | None = None) -> dict[str, Any]:
        return self.wait_status(
            f"phase {phase}" + (f" of revision {revision}" if revision else ""),
            lambda s: s.get("phase") == phase and (revision is None or s.get("revision") == revision),
            name,
        )

    def reconciled_after(self, operator: OperatorThread, change: Callable[[], object]) -> None:
        """Make a change and wait until the operator has reconciled at least once after it."""
        assert operator.runtime is not None
        before = operator.runtime.started
        change()
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while operator.runtime.reconciles <= before:
            assert time.monotonic() < deadline, "the operator did not reconcile after the change"
            time.sleep(0.05)

    def events(self, name: str = "shop") -> list[dict[str, Any]]:
        listed = json.loads(self.kubectl("get", "events", "-o", "json").stdout)["items"]
        return [e for e in listed if e["involvedObject"].get("name") == name]

    def wait_event(self, reason: str, message: str | None = None, name: str = "shop") -> dict[str, Any]:
        return wait_event(lambda: self.events(name), reason, message, DEFAULT_TIMEOUT)
