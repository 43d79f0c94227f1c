"""Story: a user applies a Release with kubectl and waits for it, as CI would."""

from __future__ import annotations

import yaml
from cluster import QUICKSTART, Cluster, quickstart_release

PRINTER_COLUMNS = ("Version", "Phase", "Weight", "Step", "Ready")


def test_first_release_as_a_user_types_it(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", str(QUICKSTART))
    cluster.kubectl("wait", "--for=condition=Ready", "release/shop", "--timeout=45s")

    status = cluster.status()
    assert status["phase"] == "Succeeded"
    assert status["observedGeneration"] == cluster.release()["metadata"]["generation"]
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}, "the first revision has no canary"
    api = cluster.deployments()["shop-api"]
    assert api["metadata"]["ownerReferences"][0]["kind"] == "Release"
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/instance"] == "shop"
    assert pod_labels["app.kubernetes.io/version"] == "1.0.0"
    assert pod_labels["shepherd.dev/role"] == "stable"
    cluster.wait_event("Succeeded")  # posted just after the status
    reasons = {e["reason"] for e in cluster.events()}
    assert {"NewRevision", "Progressing", "Baking", "Succeeded"} <= reasons


def test_canary_steps_then_promotion(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)

    cluster.apply(quickstart_release("1.1.0"))
    weights: list[int] = []

    def record(status: dict) -> bool:
        if status.get("revision") == 2 and (not weights or weights[-1] != status.get("canaryWeight")):
            weights.append(status.get("canaryWeight", 0))
        return status.get("phase") == "Succeeded" and status.get("revision") == 2

    cluster.wait_status("revision 2 to succeed", record)
    assert weights == sorted(weights), f"weights must never decrease: {weights}"
    assert weights[-1] == 100 and 25 in weights
    assert cluster.images() == {
        "shop-api": "ghcr.io/example/shop-api:1.1.0",
        "shop-web": "ghcr.io/example/shop-web:1.1.0",
    }
    history = cluster.status()["history"]
    assert [(h["revision"], h["result"]) for h in history] == [(1, "Succeeded"), (2, "Succeeded")]
    revisions = cluster.kubectl("get", "controllerrevisions", "-o", "name").stdout.split()
    assert revisions == ["controllerrevision.apps/shop-1", "controllerrevision.apps/shop-2"]


def test_printer_columns_resolve_as_kubectl_custom_columns(cluster: Cluster) -> None:
    """Build -o custom-columns from the CRD's own printer columns: proves their JSONPaths."""
    crd = yaml.safe_load((QUICKSTART.parents[1] / "crds" / "release.yaml").read_text())
    columns = {c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert set(PRINTER_COLUMNS) <= set(columns)
    cluster.apply(quickstart_release("1.0.0"))
    cluster.kubectl("wait", "--for=condition=Ready", "release/shop", "--timeout=45s")
    spec = ",".join(f"{name}:{columns[name]}" for name in PRINTER_COLUMNS)
    output = cluster.kubectl("get", "release", "shop", "-o", f"custom-columns={spec}").stdout.split("\n")
    assert output[0].split() == list(PRINTER_COLUMNS)
    assert output[1].split() == ["1.0.0", "Succeeded", "100", "5", "True"]
    table = cluster.kubectl("get", "rel").stdout.split("\n")
    assert table[0].split()[:6] == ["NAME", "VERSION", "PHASE", "WEIGHT", "STEP", "READY"]
