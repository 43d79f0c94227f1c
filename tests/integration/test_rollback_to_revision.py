"""Story: three releases later, an SRE rolls back to revision 1, with kubectl annotate or kubectl release;
the old content comes back as a new revision through the canary, and git's newer spec does not undo it."""

from __future__ import annotations

from cluster import Cluster, quickstart_release

from shepherd.runner import OperatorThread

HOLD = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}


def images(version: str) -> set[str]:
    return {f"ghcr.io/example/shop-api:{version}", f"ghcr.io/example/shop-web:{version}"}


def three_revisions(cluster: Cluster) -> None:
    for revision, version in enumerate(("1.0.0", "1.1.0", "1.2.0"), start=1):
        cluster.apply(quickstart_release(version, **HOLD))
        if revision > 1:
            cluster.wait_phase("Paused", revision=revision)
            cluster.kubectl("annotate", "release", "shop", "shepherd.dev/promote=full")
        cluster.wait_phase("Succeeded", revision=revision)
    assert set(cluster.images().values()) == images("1.2.0")


def test_annotate_rollback_to_revision_1_restores_its_images(
    cluster: Cluster, shepherd: OperatorThread
) -> None:
    three_revisions(cluster)

    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/rollback=1")
    status = cluster.wait_phase("Paused", revision=4)
    assert "shepherd.dev/rollback" not in cluster.release()["metadata"].get("annotations", {})
    assert cluster.images() == {
        "shop-api": "ghcr.io/example/shop-api:1.2.0",
        "shop-api-canary": "ghcr.io/example/shop-api:1.0.0",
        "shop-web": "ghcr.io/example/shop-web:1.2.0",
        "shop-web-canary": "ghcr.io/example/shop-web:1.0.0",
    }, "a rollback takes the same canary steps"
    assert status["version"] == "1.0.0" and status["override"]["rollbackOf"] == 1
    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/promote=full")
    status = cluster.wait_phase("Succeeded", revision=4)
    assert set(cluster.images().values()) == images("1.0.0")
    entry = status["history"][-1]
    assert (entry["revision"], entry["version"], entry["rollbackOf"]) == (4, "1.0.0", 1)
    assert entry["commands"][0]["outcome"] == "rolling back to revision 1 (1.0.0) as revision 4"
    assert (status["history"][-2]["revision"], status["history"][-2]["result"]) == (3, "Succeeded")
    recorded = cluster.kubectl("get", "controllerrevision", "shop-4", "-o", "jsonpath={.data.version}").stdout
    assert recorded == "1.0.0"

    # The GitOps tool applies git's spec (still 1.2.0) again: the rollback stands.
    cluster.apply(quickstart_release("1.2.0", **HOLD))
    cluster.reconciled_after(
        shepherd, lambda: cluster.kubectl("annotate", "release", "shop", "unrelated=touch")
    )
    assert cluster.status()["revision"] == 4
    assert set(cluster.images().values()) == images("1.0.0")

    # A new commit is a new revision as usual, with the rolled-back revision as its baseline.
    cluster.apply(quickstart_release("1.3.0", **HOLD))
    status = cluster.wait_phase("Paused", revision=5)
    assert "override" not in status
    assert cluster.images()["shop-api"] == "ghcr.io/example/shop-api:1.0.0"
    assert cluster.images()["shop-api-canary"] == "ghcr.io/example/shop-api:1.3.0"


def test_kubectl_release_rollback_to_a_revision_and_to_the_previous_one(cluster: Cluster) -> None:
    three_revisions(cluster)

    requested = cluster.kubectl("release", "rollback", "shop", "--to-revision", "1")
    assert requested.stdout.splitlines() == [
        "release.shepherd.dev/shop rollback requested",
        "release.shepherd.dev/shop rollback: rolling back to revision 1 (1.0.0) as revision 4",
    ], "it waits for the operator's acknowledgement"
    cluster.wait_phase("Paused", revision=4)
    cluster.kubectl("release", "promote", "shop", "--full")
    cluster.wait_phase("Succeeded", revision=4)
    assert set(cluster.images().values()) == images("1.0.0")
    history = cluster.kubectl("release", "history", "shop").stdout
    row = next(line for line in history.splitlines() if line.split()[:2] == ["4", "1.0.0"])
    assert "rollback to 1" in row and "Succeeded" in row

    # previous: the stable revision before this one, the last content other than 1.0.0.
    cluster.kubectl("release", "rollback", "shop")
    status = cluster.wait_phase("Paused", revision=5)
    assert status["history"][-1]["rollbackOf"] == 3
    assert "override" not in status, "revision 3's content is git's again: nothing to stand in for"
    assert cluster.images()["shop-api-canary"] == "ghcr.io/example/shop-api:1.2.0"

    cluster.kubectl("release", "rollback", "shop", "--to-revision", "42")
    warning = "shepherd.dev/rollback=42: ignored: there is no revision 42; the latest is 5"
    latest = cluster.wait_status("the ignored command", lambda s: len(s["history"][-1]["commands"]) == 2)
    assert latest["history"][-1]["commands"][-1]["outcome"] == warning.split(": ", 1)[1]
    cluster.wait_event("Rollback", warning)
    assert cluster.status()["phase"] == "Paused" and cluster.status()["revision"] == 5

    refused = cluster.kubectl("release", "rollback", "shop", "--to-revision", "0", check=False)
    assert refused.returncode != 0 and "--to-revision" in refused.stderr
