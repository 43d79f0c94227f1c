"""bench/dashboard.py at its smoke size: the board's first render with 20 Releases on the local API, status
changes shown by an open board in Chromium without a reload, and the server's RSS and CPU at rest."""

from __future__ import annotations

import json

import pytest
from benchrun import smoke


@pytest.mark.timeout(300)
def test_dashboard_bench_measures_at_smoke_size() -> None:
    figures = json.loads(smoke("dashboard.py", 240).stdout)
    assert figures["releases"] == 20
    assert 0 < figures["first_render_seconds"] < 60
    assert figures["board_render_seconds"]["samples"] == 5
    changes = figures["status_change_to_page_seconds"]
    assert changes["samples"] == 3 and 0 < changes["p50"] <= changes["p99"] < 5
    assert 10 < figures["rss_mib_at_rest"] < 1024
    assert 0 <= figures["cpu_percent_at_rest"] < 50
