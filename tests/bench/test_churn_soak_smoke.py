"""bench/churn_soak.py at its smoke size on the real control plane: two cycles of twenty Releases created
and deleted; the operator's RSS and /metrics measured before and after each."""

from __future__ import annotations

import json

import pytest
from benchrun import smoke


@pytest.mark.timeout(420)
def test_churn_soak_bench_measures_at_smoke_size() -> None:
    out = smoke("churn_soak.py", 300).stdout
    figures = json.loads(out[out.index("{") :])
    assert figures["releases_per_cycle"] == 20 and figures["cycles"] == 2
    assert len(figures["rss_mib_by_cycle"]) == 3 and figures["rss_mib_before"] > 0
    assert figures["metrics_bytes_before"] > 0
    assert abs(figures["metrics_growth"]) < 0.1, "every deleted Release's series is gone from /metrics"
