"""The happy path and an abort on a real cluster, with real pods (the tiny pause image)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from conftest import Kubectl

IMAGE = "registry.k8s.io/pause"


def release(version: str, tag: str) -> str:
    manifest: dict[str, Any] = {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": "shop"},
        "spec": {
            "version": version,
            "progressDeadline": "3m",
            "components": [
                {
                    "name": "api",
                    "replicas": 2,
                    "template": {"spec": {"containers": [{"name": "api", "image": f"{IMAGE}:{tag}"}]}},
                }
            ],
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
            "postRelease": {"bake": "5s"},
        },
    }
    return yaml.safe_dump(manifest)


def status(kubectl: Kubectl) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", "release", "shop", "-o", "json").stdout).get("status") or {})


def test_release_then_abort_the_next_one(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=release("3.9", "3.9"))
    kubectl("wait", "--for=condition=Ready", "release/shop", "--timeout=180s")
    assert status(kubectl)["phase"] == "Succeeded"

    kubectl("apply", "-f", "-", input=release("3.10", "3.10"))
    kubectl("wait", "--for=jsonpath={.status.phase}=Paused", "release/shop", "--timeout=180s")
    assert status(kubectl)["canaryWeight"] == 50
    canary = json.loads(kubectl("get", "deployment", "shop-api-canary", "-o", "json").stdout)
    assert canary["status"].get("readyReplicas") == 1

    kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    kubectl("wait", "--for=condition=Stalled", "release/shop", "--timeout=180s")
    final = status(kubectl)
    assert final["phase"] == "RolledBack"
    stable = json.loads(kubectl("get", "deployment", "shop-api", "-o", "json").stdout)
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}:3.9"
    assert kubectl("get", "deployment", "shop-api-canary", check=False).returncode != 0
