"""Story: config lives in the Release; a config change is a canary, a rollback brings the old config back."""

from __future__ import annotations

import json
import re
from typing import Any

from cluster import Cluster, quickstart_release

from shepherd.lab.kubelet import KubeletSimulator

HOLD = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}
HASHED = re.compile(r"^shop-config-[0-9a-f]{10}$")


def release(version: str = "1.0.0", log_level: str = "info", **spec: Any) -> dict[str, Any]:
    """The quickstart with `shop-config`: the api mounts it and takes its environment from it, the web
    reads one key of it."""
    manifest = quickstart_release(version, **spec)
    manifest["spec"]["config"] = [
        {"name": "shop-config", "data": {"LOG_LEVEL": log_level, "app.yaml": f"log: {log_level}\n"}}
    ]
    api, web = (c["template"]["spec"] for c in manifest["spec"]["components"])
    api["volumes"] = [{"name": "config", "configMap": {"name": "shop-config"}}]
    api["containers"][0]["volumeMounts"] = [{"name": "config", "mountPath": "/etc/shop"}]
    api["containers"][0]["envFrom"] = [{"configMapRef": {"name": "shop-config"}}]
    web["containers"][0]["env"] = [
        {"name": "LOG_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "shop-config", "key": "LOG_LEVEL"}}}
    ]
    return manifest


def config_maps(cluster: Cluster) -> dict[str, dict[str, Any]]:
    listed = cluster.kubectl("get", "configmaps", "-l", "app.kubernetes.io/instance=shop", "-o", "json")
    return {c["metadata"]["name"]: c for c in json.loads(listed.stdout)["items"]}


def reads(cluster: Cluster, deployment: str) -> str:
    """The LOG_LEVEL a Deployment's pods get, from the ConfigMap their template names (all three ways)."""
    pod = cluster.deployments()[deployment]["spec"]["template"]["spec"]
    if "volumes" in pod:
        name = pod["volumes"][0]["configMap"]["name"]
        assert pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == name
    else:
        name = pod["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]["name"]
    assert HASHED.match(name), name
    found = cluster.kubectl("get", "configmap", name, "-o", "jsonpath={.data.LOG_LEVEL}")
    return found.stdout


def test_a_config_change_is_a_canary_beside_the_stable_on_the_old_config(cluster: Cluster) -> None:
    cluster.apply(release("1.0.0", log_level="info"))
    cluster.wait_phase("Succeeded", revision=1)

    [(name, created)] = config_maps(cluster).items()
    assert HASHED.match(name)
    assert created["immutable"] is True
    assert created["data"] == {"LOG_LEVEL": "info", "app.yaml": "log: info\n"}
    assert created["metadata"]["annotations"]["shepherd.dev/config-name"] == "shop-config"
    assert created["metadata"]["ownerReferences"][0]["name"] == "shop"
    assert reads(cluster, "shop-api") == reads(cluster, "shop-web") == "info"
    edit = cluster.kubectl(
        "patch", "configmap", name, "--type=merge", "-p", '{"data":{"LOG_LEVEL":"debug"}}', check=False
    )
    assert edit.returncode != 0 and "field is immutable" in edit.stderr

    cluster.apply(release("1.0.0", log_level="debug", **HOLD))
    cluster.wait_phase("Paused", revision=2)
    assert cluster.replicas() == {"shop-api": 2, "shop-api-canary": 2, "shop-web": 1, "shop-web-canary": 1}
    assert reads(cluster, "shop-api-canary") == reads(cluster, "shop-web-canary") == "debug"
    assert reads(cluster, "shop-api") == reads(cluster, "shop-web") == "info"
    assert len(config_maps(cluster)) == 2

    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/promote=full")
    cluster.wait_phase("Succeeded", revision=2)
    assert set(cluster.deployments()) == {"shop-api", "shop-web"}
    assert reads(cluster, "shop-api") == reads(cluster, "shop-web") == "debug"
    assert len(config_maps(cluster)) == 2, "revision 1 and its config are kept for a rollback"


def test_a_rollback_after_promotion_restores_code_and_config_and_history_takes_its_config_along(
    cluster: Cluster, kubelet: KubeletSimulator
) -> None:
    fast = {"progressDeadline": "3s", "rollback": {"revisionHistoryLimit": 2}}
    cluster.apply(release("1.0.0", log_level="info", **fast))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(release("1.0.0", log_level="debug", **fast))
    cluster.wait_phase("Succeeded", revision=2)
    first_config = {n for n, c in config_maps(cluster).items() if c["data"]["LOG_LEVEL"] == "info"}

    # Revision 3 changes code and config; once promoted, its pods stop getting ready during the bake.
    cluster.apply(release("1.1.0", log_level="warn", postRelease={"bake": "10m"}, **fast))
    cluster.wait_phase("Baking", revision=3)
    assert cluster.images()["shop-api"] == "ghcr.io/example/shop-api:1.1.0"
    assert reads(cluster, "shop-api") == "warn"
    kubelet.set_behaviour("default", "shop-api", "never-ready")
    cluster.wait_phase("RollingBack", revision=3)
    kubelet.set_behaviour("default", "shop-api", None)
    status = cluster.wait_phase("RolledBack", revision=3)

    assert status["reason"] == "ProgressDeadlineExceeded"
    assert status["stableRevision"] == 2
    assert set(cluster.images().values()) == {
        "ghcr.io/example/shop-api:1.0.0",
        "ghcr.io/example/shop-web:1.0.0",
    }
    assert reads(cluster, "shop-api") == reads(cluster, "shop-web") == "debug"
    revisions = cluster.kubectl("get", "controllerrevisions", "-o", "name").stdout.split()
    assert sorted(revisions) == ["controllerrevision.apps/shop-2", "controllerrevision.apps/shop-3"]
    levels = sorted(c["data"]["LOG_LEVEL"] for c in config_maps(cluster).values())
    assert levels == ["debug", "warn"], "revision 1 left the history and took its ConfigMap with it"
    assert not first_config & set(config_maps(cluster))
