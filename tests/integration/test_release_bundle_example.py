"""examples/bundle.yaml as a user applies it: two services, their config and a migration move as one."""

from __future__ import annotations

import json

import yaml
from cluster import REPO, Cluster

BUNDLE = REPO / "examples" / "bundle.yaml"


def test_the_bundle_example_migrates_then_rolls_out_both_services_with_their_config(cluster: Cluster) -> None:
    documents = [d for d in yaml.safe_load_all(BUNDLE.read_text()) if d]
    release = next(d for d in documents if d["kind"] == "Release")
    release["spec"]["postRelease"]["bake"] = "1s"  # the example bakes 15m; the story only needs the order
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([release]))

    status = cluster.wait_phase("Succeeded", name="orders", revision=1)

    migration = json.loads(cluster.kubectl("get", "job", "orders-migrate-schema-r1", "-o", "json").stdout)
    assert any(c["type"] == "Complete" for c in migration["status"]["conditions"])
    (hashed,) = [
        m["metadata"]["name"]
        for m in json.loads(cluster.kubectl("get", "configmaps", "-o", "json").stdout)["items"]
        if m["metadata"]["name"].startswith("orders-config-")
    ]
    deployments = cluster.deployments("orders")
    assert set(deployments) == {"orders-api", "orders-worker"}
    for deployment in deployments.values():
        sources = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": hashed}} in sources, "both services read the revision's ConfigMap"
        assert {"secretRef": {"name": "orders-db"}} in sources
    ran = next(h for h in status["history"] if h["revision"] == 1)["migrations"]
    assert [(m["job"], m["state"]) for m in ran] == [("orders-migrate-schema-r1", "Succeeded")]
