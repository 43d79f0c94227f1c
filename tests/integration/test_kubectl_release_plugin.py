"""Story: an SRE steers a release with `kubectl release ...` (the kubectl-release plugin on PATH)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cluster import Cluster, quickstart_release

HOLD = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}


def with_plugin_on_path(cluster: Cluster) -> None:
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def test_status_promote_and_history_through_kubectl(cluster: Cluster) -> None:
    with_plugin_on_path(cluster)
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", **HOLD))
    cluster.wait_phase("Paused", revision=2)

    shown = cluster.kubectl("release", "status", "shop").stdout
    assert "Paused" in shown and "50%" in shown
    assert "> 2." in shown, "the current step is marked"
    as_json = json.loads(cluster.kubectl("release", "status", "shop", "-o", "json", "-n", "default").stdout)
    assert as_json["phase"] == "Paused", "-n is taken after the subcommand, as kubectl does"
    listed = cluster.kubectl("release", "list").stdout
    assert "shop" in listed and "Paused" in listed

    assert "promote requested" in cluster.kubectl("release", "promote", "shop").stdout
    cluster.wait_phase("Succeeded", revision=2)
    history = cluster.kubectl("release", "history", "shop").stdout
    assert "Succeeded" in history and "1.1.0" in history


def test_abort_waits_until_traffic_is_back_on_stable_and_says_so(cluster: Cluster) -> None:
    with_plugin_on_path(cluster)
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", **HOLD))
    cluster.wait_phase("Paused", revision=2)

    said = cluster.kubectl("release", "abort", "shop", "--timeout", "45s").stdout.splitlines()
    assert said == [
        "release.shepherd.dev/shop abort requested",
        "release.shepherd.dev/shop abort: rolling back",
        "release.shepherd.dev/shop aborted: RolledBack, all traffic on revision 1 (1.0.0)",
    ]
    assert cluster.status()["phase"] == "RolledBack", "it returned once the abort took effect"
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}

    again = cluster.kubectl("release", "abort", "shop").stdout
    assert "abort: ignored: nothing to abort in phase RolledBack" in again
    quick = cluster.kubectl("release", "retry", "shop", "--no-wait").stdout
    assert quick.strip() == "release.shepherd.dev/shop retry requested"


def test_missing_release_is_a_clear_error(cluster: Cluster) -> None:
    with_plugin_on_path(cluster)
    result = cluster.kubectl("release", "abort", "nope", check=False)
    assert result.returncode != 0
    assert 'release "nope" not found in namespace "default"' in result.stderr
    elsewhere = cluster.kubectl("release", "abort", "nope", "--namespace=staging", check=False)
    assert 'release "nope" not found in namespace "staging"' in elsewhere.stderr


def test_pause_resume_and_watch_until_settled(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0"))
    cluster.wait_status("the canary", lambda s: s.get("revision") == 2 and s.get("canaryWeight", 0) >= 25)

    assert "paused" in cluster.kubectl("release", "pause", "shop").stdout
    cluster.wait_phase("Paused")
    assert cluster.release()["spec"]["paused"] is True
    assert "resumed" in cluster.kubectl("release", "resume", "shop").stdout

    watched = cluster.kubectl("release", "status", "shop", "--watch", timeout=60)
    assert "Succeeded" in watched.stdout, "the watch follows the rollout until it settles"
    assert cluster.status()["phase"] == "Succeeded"


def test_get_shows_what_the_gates_wait_for(cluster: Cluster) -> None:
    with_plugin_on_path(cluster)
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", gates=[{"name": "sign-off", "approval": {"count": 1}}]))
    cluster.wait_status("the gate's verdict", lambda s: s.get("phase") == "Gating" and bool(s.get("gates")))

    shown = cluster.kubectl("release", "get", "shop").stdout
    message, *rows = (line for line in shown.splitlines() if "sign-off" in line)
    assert "is waiting for its gates: sign-off: 0/1 approvals of revision 2" in message, shown
    gate_row = next(row for row in rows if "Pending" in row)
    assert "0/1 approvals of revision 2" in gate_row, shown
