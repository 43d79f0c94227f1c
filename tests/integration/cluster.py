"""What the stories share: the real kubectl, the operator's adapter for reads, and polling with deadlines."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from shepherd.kube import KubeAPI, ReleaseKey
from shepherd.runner import OperatorThread

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
DEFAULT_TIMEOUT = 45.0


def quickstart_release(version: str = "1.0.0", **spec: Any) -> dict[str, Any]:
    """examples/quickstart.yaml's Release at `version` (images follow), with faster pauses for tests."""
    base = next(d for d in yaml.safe_load_all(QUICKSTART.read_text()) if d and d["kind"] == "Release")
    release = copy.deepcopy(base)
    release["spec"]["version"] = version
    for component in release["spec"]["components"]:
        for container in component["template"]["spec"]["containers"]:
            container["image"] = container["image"].rsplit(":", 1)[0] + f":{version}"
    release["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 25},
        {"pause": {"duration": "1s"}},
        {"setWeight": 50},
        {"pause": {"duration": "1s"}},
        {"setWeight": 75},
    ]
    release["spec"]["postRelease"] = {"bake": "1s"}
    release["spec"].update(spec)
    return release


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
        uid = self.release(name)["metadata"]["uid"]
        return self.api.owned_deployments(ReleaseKey(namespace, name), uid)

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
