"""bench/slow_prometheus.py at its smoke size on the local API with the real Prometheus: ten Releases step
past a pause while another's Prometheus holds every answer; how late their steps started, and the errors
the held queries cost their own Release."""

from __future__ import annotations

import re

from benchrun import smoke


def test_slow_prometheus_bench_measures_at_smoke_size() -> None:
    out = smoke("slow_prometheus.py", 240).stdout
    assert "10 Releases past a 5s pause at once; how late the step after it started:" in out, out
    for label in ("alone", "while one Prometheus held its answers 4s"):
        late = re.search(rf"  {label}: p50 (-?\d+) ms  p99 (-?\d+) ms", out)
        assert late is not None and int(late[1]) <= int(late[2]), out
    held = re.search(r"slow Prometheus: (\d+) queries held, (\d+) errors recorded by its Release", out)
    assert held is not None and int(held[1]) > 0 and int(held[2]) > 0, out
