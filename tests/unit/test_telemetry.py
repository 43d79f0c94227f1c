"""Metric observations derived from status changes, over whole simulated lifecycles."""

from __future__ import annotations

import copy
from datetime import timedelta

from simulation import ABORT, RETRY, T0, World, canary_at, release_spec

from shepherd.telemetry import COMMITTED_AT, Observed, observe


def lifecycle(world: World, rounds: int = 30) -> list[Observed]:
    seen = []
    for _ in range(rounds):
        before = copy.deepcopy(world.status)
        world.reconcile()
        seen.append(observe(before, world.status, world.annotations))
    return seen


def total(observations: list[Observed], field: str) -> int:
    return sum(
        getattr(o, field) if isinstance(getattr(o, field), int) else len(getattr(o, field))
        for o in observations
    )


def test_first_release_counts_one_deployment_with_its_lead_time() -> None:
    world = World(release_spec("1.0.0"))
    world.annotations[COMMITTED_AT] = (T0 - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    seen = lifecycle(world)
    world.now += timedelta(minutes=5)
    seen += lifecycle(world)
    assert world.phase == "Succeeded"
    assert total(seen, "deployed") == 1
    assert total(seen, "revisions_started") == 1
    assert [s for o in seen for s in o.lead_time_seconds] == [15 * 60]
    assert [r for o in seen for r, _ in o.rollout_seconds] == ["Succeeded"]
    assert "Baking" in [p for o in seen for p in o.entered]


def test_a_rollback_counts_as_a_failed_change_with_a_time_to_restore() -> None:
    world = canary_at(25)
    world.annotations[ABORT] = "true"
    world.unready.add("shop-api")
    seen = lifecycle(world, 2)
    world.now += timedelta(seconds=42)
    world.unready.clear()
    seen += lifecycle(world, 3)
    assert world.phase == "RolledBack"
    assert [r for o in seen for r in o.rollbacks] == ["Aborted"]
    assert [s for o in seen for s in o.restore_seconds] == [42]
    assert total(seen, "deployed") == 0
    world.annotations[RETRY] = "true"
    seen = lifecycle(world, 3)
    assert world.status["attempt"] == 2
    assert total(seen, "revisions_started") == 1, "a retry is a new attempt"


def test_nothing_changed_observes_nothing() -> None:
    world = canary_at(25)
    world.settle()
    status = copy.deepcopy(world.status)
    assert observe(status, status, {}) == Observed(phase="Progressing")
