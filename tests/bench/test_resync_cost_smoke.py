"""bench/resync_cost.py at its smoke size: the CPU of a full decision and of a pass over an unchanged
Release that decides nothing again, for 1, 5 and 20 components and with gates and a policy."""

from __future__ import annotations

import re

from benchrun import smoke

LINE = re.compile(
    r"^  (?P<label>\d+ components[^|]*?) +full decision p50 +(?P<full>\d+) us  \|  "
    r"unchanged p50 +(?P<p50>[\d.]+) us  p99 +(?P<p99>[\d.]+) us  \((?P<ratio>\d+)x less\)$",
    re.M,
)


def test_resync_cost_bench_measures_at_smoke_size() -> None:
    out = smoke("resync_cost.py", 180).stdout
    measured = {m["label"].strip(): m for m in LINE.finditer(out)}
    assert set(measured) == {
        "1 components",
        "5 components",
        "20 components",
        "5 components, gates and a policy",
    }, out
    for line in measured.values():
        assert float(line["p50"]) > 0 and int(line["full"]) > 0, out
        assert float(line["p50"]) <= float(line["p99"]), out
