"""Story: the new version never becomes ready; Shepherd gives up after progressDeadline and rolls back."""

from __future__ import annotations

from cluster import Cluster, quickstart_release

from shepherd.lab.kubelet import KubeletSimulator


def test_never_ready_canary_rolls_back_after_the_progress_deadline(
    cluster: Cluster, kubelet: KubeletSimulator
) -> None:
    cluster.apply(quickstart_release("1.0.0", progressDeadline="3s"))
    cluster.wait_phase("Succeeded", revision=1)
    kubelet.set_behaviour("default", "shop-api-canary", "never-ready")
    cluster.apply(quickstart_release("1.1.0", progressDeadline="3s"))

    status = cluster.wait_phase("RolledBack")
    assert status["reason"] == "ProgressDeadlineExceeded"
    assert "shop-api-canary" in status["message"]
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "ProgressDeadlineExceeded"
    assert any(e["reason"] == "RollingBack" and e["type"] == "Warning" for e in cluster.events())


def test_crashing_canary_rolls_back_without_waiting_for_the_deadline(
    cluster: Cluster, kubelet: KubeletSimulator
) -> None:
    cluster.apply(quickstart_release("1.0.0", progressDeadline="10m"))
    cluster.wait_phase("Succeeded", revision=1)
    kubelet.set_behaviour("default", "shop-web-canary", "crash")
    cluster.apply(quickstart_release("1.1.0", progressDeadline="10m"))
    status = cluster.wait_phase("RolledBack")
    assert "shop-web-canary" in status["message"]
