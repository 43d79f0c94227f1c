"""bench/rollback_latency.py at its smoke size: three bad canaries rolled back on the local API with the
real Prometheus; p50 and p99 of bad traffic -> zero canary replicas, in seconds and as a multiple of
(analysis interval + scrape interval)."""

from __future__ import annotations

import re

from benchrun import smoke

BUDGET_SECONDS = 3.0  # the bench's analysis interval (2s) + scrape interval (1s)


def test_rollback_latency_bench_measures_at_smoke_size() -> None:
    out = smoke("rollback_latency.py", 180).stdout
    assert "rollback latency over 3 runs (analysis interval 2s, scrape 1s)" in out, out
    for name in ("p50", "p99"):
        found = re.search(rf"^  {name} (\d+\.\d+)s = (\d+\.\d+) x \(interval \+ scrape\)$", out, re.M)
        assert found is not None, out
        seconds, multiple = float(found[1]), float(found[2])
        assert seconds > 0 and abs(multiple - seconds / BUDGET_SECONDS) < 0.01, out
    assert re.search(r"^  target p99 <= 4s: (met|NOT met)$", out, re.M), out
    every = re.search(r"^  all: (.*)$", out, re.M)
    assert every is not None and len(every[1].split()) == 3, out
    assert all(0 < float(v) < 60 for v in every[1].split()), out
