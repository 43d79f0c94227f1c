"""bench/scale.py at its smoke size on the real control plane (`make cluster-binaries`): six Releases rolled
out by one operator replica, an idle window, change and due-step latencies, writes per step; and, without
the binaries, a failure that names the make target building them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchrun import run, smoke


@pytest.mark.timeout(420)
def test_scale_bench_measures_at_smoke_size() -> None:
    figures = json.loads(smoke("scale.py", 300).stdout)
    assert figures["releases"] == 6
    assert 0 < figures["apply_seconds"] <= figures["all_succeeded_seconds"]
    assert figures["idle_window_seconds"] > 0 and figures["idle_cpu_share"] >= 0
    assert figures["idle_requests_per_second_per_release"] >= 0
    assert figures["idle_resyncs"] >= 6, "two resyncs of six unchanged Releases, each skipped"
    assert figures["idle_cpu_per_resync_us"] > 0
    assert figures["change_to_canary_seconds"]["samples"] == 3
    assert 0 < figures["change_to_canary_seconds"]["p50"] <= figures["change_to_canary_seconds"]["p99"]
    assert 1 <= figures["due_step_lateness_seconds"]["samples"] <= 3
    assert figures["writes_per_canary_step"] > 0 and figures["writes_per_revision_start"] > 0
    assert len(figures["writes_by_step"]) == 3
    assert figures["rss_mib"] > 0


def test_scale_bench_without_the_control_plane_fails_naming_its_make_target(tmp_path: Path) -> None:
    done = run("scale.py", "--smoke", timeout=60, env={"SHEPHERD_CLUSTER_BIN": str(tmp_path)})
    assert done.returncode != 0, done.report()
    assert "make cluster-binaries" in done.stderr, done.report()
