"""Story: an SRE aborts a canary with kubectl annotate; the release rolls back and stays rolled back."""

from __future__ import annotations

from cluster import Cluster, quickstart_release

from shepherd.runner import OperatorThread

HOLD = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}


def test_abort_mid_canary_rolls_back_and_is_not_retried(cluster: Cluster, shepherd: OperatorThread) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", **HOLD))
    cluster.wait_phase("Paused", revision=2)
    assert cluster.replicas() == {"shop-api": 2, "shop-api-canary": 2, "shop-web": 1, "shop-web-canary": 1}

    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    cluster.kubectl("wait", "--for=condition=Stalled", "release/shop", "--timeout=45s")

    status = cluster.wait_phase("RolledBack")
    assert status["reason"] == "Aborted"
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}
    assert set(cluster.images().values()) == {
        "ghcr.io/example/shop-api:1.0.0",
        "ghcr.io/example/shop-web:1.0.0",
    }
    assert "shepherd.dev/abort" not in cluster.release()["metadata"].get("annotations", {})
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert status["history"][-1]["commands"][0]["action"] == "abort"

    # Re-applying the same (failed) content from git must not start it again.
    cluster.apply(quickstart_release("1.1.0", **HOLD))
    cluster.reconciled_after(
        shepherd, lambda: cluster.kubectl("annotate", "release", "shop", "unrelated=touch")
    )
    assert cluster.status()["phase"] == "RolledBack"
    assert "shop-api-canary" not in cluster.replicas()


def test_retry_starts_the_failed_revision_again(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0"))
    cluster.wait_status("the canary", lambda s: s.get("revision") == 2 and s.get("canaryWeight", 0) >= 25)
    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    cluster.wait_phase("RolledBack")

    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/retry=true")
    status = cluster.wait_phase("Succeeded", revision=2)
    assert status["attempt"] == 2
    assert [(h["revision"], h["attempt"], h["result"]) for h in status["history"]] == [
        (1, 1, "Succeeded"),
        (2, 1, "RolledBack"),
        (2, 2, "Succeeded"),
    ]
