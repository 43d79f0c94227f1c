"""bench/reconcile_cost.py at its smoke size: decide() timed, one live rollout's punctuality, three
Releases at once, on the local API."""

from __future__ import annotations

import re

from benchrun import smoke


def test_reconcile_cost_bench_measures_at_smoke_size() -> None:
    out = smoke("reconcile_cost.py", 180).stdout
    for components in (1, 5, 20):
        assert re.search(rf"^ +{components} components: p50 +\d+ us +p99 +\d+ us$", out, re.M), out
    late = re.search(
        r"pause was due: p50 (-?\d+) ms +p99 (-?\d+) ms +\((\d+) pauses; p99 = [\d.]+ x resync\)", out
    )
    assert late is not None and int(late[3]) == 3, out
    rollout = re.search(r"reconciles (\d+), API calls (\d+), [\d.]+ calls per reconcile", out)
    assert rollout is not None and int(rollout[1]) > 0 and int(rollout[2]) > 0, out
    at_once = re.search(
        r"^3 first releases at once\n .*all Succeeded [\d.]+s later; reconciles (\d+);", out, re.M
    )
    assert at_once is not None and int(at_once[1]) >= 3, out
    assert re.search(r"peak RSS of this process .*: \d+ MiB", out), out
