"""Story: the operator is killed mid-canary; a new one resumes from status alone."""

from __future__ import annotations

from cluster import Cluster, quickstart_release

from shepherd.lab.localapi import LocalAPIThread
from shepherd.runner import OperatorThread

HOLD = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 75}]}}}


def test_restart_mid_canary_finishes_the_rollout(
    cluster: Cluster, shepherd: OperatorThread, local_api: LocalAPIThread
) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", **HOLD))
    cluster.wait_phase("Paused", revision=2)
    shepherd.stop()

    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/promote=true")
    before = cluster.replicas()
    assert before["shop-api-canary"] == 2, "nothing moves while no operator runs"

    with OperatorThread(shepherd.configuration, shepherd.options):
        status = cluster.wait_phase("Succeeded", revision=2)
    assert status["history"][-1]["commands"][0]["outcome"] == "step 2 skipped"
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}
