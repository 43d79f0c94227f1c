"""Story: a year-end change freeze, declared once in a ReleasePolicy, holds every release in production."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from cluster import Cluster, quickstart_release

from shepherd.runner import OperatorThread


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def freeze_policy(start: datetime, end: datetime) -> str:
    policy: dict[str, Any] = {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "prod-rules"},
        "spec": {
            "description": "production change rules",
            "namespaceSelector": {"matchLabels": {"environment": "production"}},
            "freezes": [{"start": stamp(start), "end": stamp(end), "reason": "year-end change freeze"}],
        },
    }
    return yaml.safe_dump(policy)


def canary_under_freeze(cluster: Cluster) -> None:
    cluster.kubectl("label", "namespace", "default", "environment=production")
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0"))
    cluster.wait_status("the canary", lambda s: s.get("revision") == 2 and s.get("canaryWeight", 0) >= 25)
    now = datetime.now(UTC)
    cluster.kubectl(
        "apply", "-f", "-", input=freeze_policy(now - timedelta(minutes=1), now + timedelta(hours=1))
    )
    status = cluster.wait_status("the freeze", lambda s: s.get("reason") == "Freeze")
    assert status["phase"] == "Paused"


def test_a_freeze_holds_the_canary_and_releases_it_after(cluster: Cluster, shepherd: OperatorThread) -> None:
    canary_under_freeze(cluster)
    held = cluster.status()["canaryWeight"]
    cluster.reconciled_after(shepherd, lambda: cluster.kubectl("annotate", "release", "shop", "poke=1"))
    assert cluster.status()["phase"] == "Paused"
    assert cluster.status()["canaryWeight"] == held, "no forward move while frozen"
    hold = cluster.status()["history"][-1]["holds"][0]
    assert hold["freeze"] == "year-end change freeze" and hold["policy"] == "prod-rules"

    now = datetime.now(UTC)
    cluster.kubectl(
        "apply", "-f", "-", input=freeze_policy(now - timedelta(hours=1), now - timedelta(seconds=1))
    )
    cluster.wait_phase("Succeeded", revision=2)


def test_an_abort_during_a_freeze_still_rolls_back(cluster: Cluster) -> None:
    canary_under_freeze(cluster)
    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    status = cluster.wait_phase("RolledBack")
    assert status["reason"] == "Aborted"
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}
