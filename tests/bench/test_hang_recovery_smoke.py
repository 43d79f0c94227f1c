"""bench/hang_recovery.py at its smoke size on the real control plane (`make cluster-binaries`): two writes
left unanswered through the fault proxy, each the first after a canary's creation, and how long until the
Release moved again and Succeeded, against the operator's request timeout; and, without the binaries, a
failure that names the make target building them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchrun import run, smoke


@pytest.mark.timeout(420)
def test_hang_recovery_bench_measures_at_smoke_size() -> None:
    figures = json.loads(smoke("hang_recovery.py", 300).stdout)
    timeout = figures["request_timeout_seconds"]
    assert figures["runs"] == 2 and timeout > 0 and figures["hang"] == "before"
    moving, succeeded = figures["hung_to_moving_seconds"], figures["hung_to_succeeded_seconds"]
    assert moving["samples"] == succeeded["samples"] == 2
    # Nothing moves before the hung write's deadline; then a backoff of 1 to 2s and a pass.
    assert timeout <= moving["p50"] <= moving["p99"] < timeout + 10, figures
    assert moving["p50"] <= succeeded["p50"] and moving["p99"] <= succeeded["p99"], figures
    assert abs(figures["moving_over_request_timeout"]["p99"] - moving["p99"] / timeout) < 1e-6
    assert sum(figures["hung_writes"].values()) == 2, figures


def test_hang_recovery_bench_without_the_control_plane_fails_naming_its_make_target(tmp_path: Path) -> None:
    done = run("hang_recovery.py", "--smoke", timeout=60, env={"SHEPHERD_CLUSTER_BIN": str(tmp_path)})
    assert done.returncode != 0, done.report()
    assert "make cluster-binaries" in done.stderr, done.report()
