"""bench/gateway_latency.py at its smoke size on the real control plane with the Gateway API CRDs (`make
cluster-binaries`): two rollouts routed by an HTTPRoute, step due -> route write and abort -> route write;
and, without the binaries, a failure that names the make target building them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchrun import run, smoke


@pytest.mark.timeout(420)
def test_gateway_latency_bench_measures_at_smoke_size() -> None:
    figures = json.loads(smoke("gateway_latency.py", 300).stdout)
    assert figures["runs"] == 2
    assert 1 <= figures["step_due_to_route_write_seconds"]["samples"] <= 2
    assert figures["abort_to_route_write_seconds"]["samples"] == 2
    assert figures["abort_to_route_write_seconds"]["p50"] > 0
    assert figures["writes_per_step"] >= figures["route_writes_per_step"] > 0
    assert figures["writes_per_step_by_kind"]["patch httproutes"] > 0


def test_gateway_latency_bench_without_the_control_plane_fails_naming_its_make_target(tmp_path: Path) -> None:
    done = run(
        "gateway_latency.py",
        "--smoke",
        timeout=60,
        env={"SHEPHERD_CLUSTER_BIN": str(tmp_path), "SHEPHERD_GATEWAY_API_CRDS": str(tmp_path)},
    )
    assert done.returncode != 0, done.report()
    assert "make cluster-binaries" in done.stderr, done.report()
