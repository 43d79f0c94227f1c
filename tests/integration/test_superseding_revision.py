"""Story: a new commit lands while a canary is running; the new revision takes over."""

from __future__ import annotations

from cluster import Cluster, quickstart_release

HOLD = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}


def test_new_revision_mid_canary_replaces_the_canary_and_leaves_stable_alone(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", **HOLD))
    cluster.wait_phase("Paused", revision=2)

    cluster.apply(quickstart_release("1.2.0", **HOLD))
    cluster.wait_phase("Paused", revision=3)
    images = cluster.images()
    assert images["shop-api"] == "ghcr.io/example/shop-api:1.0.0", "stable untouched"
    assert images["shop-api-canary"] == "ghcr.io/example/shop-api:1.2.0"
    history = cluster.status()["history"]
    assert [(h["revision"], h["result"]) for h in history] == [
        (1, "Succeeded"),
        (2, "Superseded"),
        (3, "InProgress"),
    ]

    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/promote=full")
    cluster.wait_phase("Succeeded", revision=3)
    assert set(cluster.images().values()) == {
        "ghcr.io/example/shop-api:1.2.0",
        "ghcr.io/example/shop-web:1.2.0",
    }
