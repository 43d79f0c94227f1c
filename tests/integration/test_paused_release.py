"""Story: GitOps pauses a release declaratively (spec.paused) and resumes it later."""

from __future__ import annotations

from datetime import datetime, timedelta

from cluster import Cluster, quickstart_release

from shepherd.runner import OperatorThread


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_spec_paused_holds_the_weight_past_the_pause_and_resumes(
    cluster: Cluster, shepherd: OperatorThread
) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", paused=True))
    status = cluster.wait_phase("Pending", revision=2)
    assert "spec.paused" in status["message"]
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}, "a paused revision does not start"

    cluster.apply(quickstart_release("1.1.0"))
    cluster.wait_status("the canary at 25%", lambda s: s.get("canaryWeight") == 25)
    cluster.kubectl("patch", "release", "shop", "--type=merge", "-p", '{"spec":{"paused":true}}')
    paused = cluster.wait_phase("Paused")
    assert paused["reason"] == "SpecPaused"
    # Hold until well past the 1s pause step, then make the operator look again.
    held_since = parse(paused["conditions"][0]["lastTransitionTime"])
    past = held_since + timedelta(seconds=3)
    cluster.wait_status("time to pass the pause step", lambda s: datetime.now(past.tzinfo) > past)
    cluster.reconciled_after(shepherd, lambda: cluster.kubectl("annotate", "release", "shop", "poke=1"))
    assert cluster.status()["phase"] == "Paused"
    assert cluster.status()["canaryWeight"] == 25

    cluster.kubectl("patch", "release", "shop", "--type=merge", "-p", '{"spec":{"paused":false}}')
    cluster.wait_phase("Succeeded", revision=2)
