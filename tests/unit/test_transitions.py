"""Every phase under every observation: one reconcile from a known state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from simulation import ABORT, PROMOTE, RETRY, ROLLBACK, World, canary_at, release_spec, succeeded


def released_twice(**overrides: object) -> World:
    """1.0.0 and then 1.0.1 Succeeded: revision 1 holds other content than the stable revision 2."""
    world = succeeded(release_spec("1.0.0", **overrides))
    world.set_spec(release_spec("1.0.1", **overrides))
    world.annotations[PROMOTE] = "full"
    world.run_until("Succeeded")
    return world


def pending() -> World:
    world = released_twice()
    world.set_spec(release_spec("1.1.0", paused=True))
    world.settle()
    return world


def progressing() -> World:
    return canary_at(25, released_twice())


def gating() -> World:
    world = released_twice()
    world.set_spec(release_spec("1.1.0", gates=[{"name": "two-approvals", "approval": {"count": 2}}]))
    world.settle()
    return world


SCHEMA_JOB = {"spec": {"template": {"spec": {"containers": [{"name": "migrate", "image": "shop/schema:1"}]}}}}
SCHEMA = {"name": "schema", "template": SCHEMA_JOB, "rollbackTemplate": SCHEMA_JOB}


def migrating() -> World:
    world = released_twice()
    world.set_spec(release_spec("1.1.0", migrations=[SCHEMA]))
    world.settle()
    return world


def rolling_back_migration() -> World:
    """Rolling back once the canary is gone: the down migration runs."""
    world = migrating()
    world.job_outcomes["shop-migrate-schema-r3"] = "succeed"
    world.settle()
    world.annotations[ABORT] = "true"
    world.settle()
    assert "shop-rollback-schema-r3" in world.jobs
    return world


def paused_step() -> World:
    world = canary_at(50, released_twice())
    world.settle()
    return world


def paused_spec() -> World:
    world = progressing()
    world.set_spec(release_spec("1.1.0", paused=True))
    world.settle()
    return world


def promoting() -> World:
    world = paused_step()
    world.annotations[PROMOTE] = "full"
    world.reconcile()
    world.unready.add("shop-api")
    world.settle()
    return world


def baking() -> World:
    world = paused_step()
    world.annotations[PROMOTE] = "full"
    world.settle()
    return world


def rolling_back() -> World:
    world = progressing()
    world.annotations[ABORT] = "true"
    world.unready.add("shop-api")
    world.reconcile()
    world.settle()
    return world


def rolled_back() -> World:
    world = progressing()
    world.annotations[ABORT] = "true"
    world.settle()
    return world


def failed() -> World:
    world = released_twice(rollback={"automatic": False})
    world.set_spec(release_spec("1.1.0", rollback={"automatic": False}))
    world.crashing.add("shop-api-canary")
    world.settle()
    return world


def time_passes(world: World) -> None:
    world.now += timedelta(seconds=1)


def promote(world: World) -> None:
    world.annotations[PROMOTE] = "true"


def promote_full(world: World) -> None:
    world.annotations[PROMOTE] = "full"


def abort(world: World) -> None:
    world.annotations[ABORT] = "true"


def retry(world: World) -> None:
    world.annotations[RETRY] = "true"


def new_content(world: World) -> None:
    world.set_spec(release_spec("1.2.0", **{k: v for k, v in world.spec.items() if k == "rollback"}))


def crash(world: World) -> None:
    world.crashing.add("shop-api-canary")
    world.crashing.add("shop-api")


def pause_in_spec(world: World) -> None:
    world.set_spec({**world.spec, "paused": True})


def rollback(world: World) -> None:
    world.annotations[ROLLBACK] = "1"


SETUPS: dict[str, Callable[[], World]] = {
    "Pending": pending,
    "Gating": gating,
    "Migrating": migrating,
    "Progressing": progressing,
    "PausedStep": paused_step,
    "PausedSpec": paused_spec,
    "Promoting": promoting,
    "Baking": baking,
    "Succeeded": released_twice,
    "RollingBack": rolling_back,
    "RollingBackMigration": rolling_back_migration,
    "RolledBack": rolled_back,
    "Failed": failed,
}
OBSERVATIONS: dict[str, Callable[[World], None]] = {
    "nothing": time_passes,
    "promote": promote,
    "promote_full": promote_full,
    "abort": abort,
    "retry": retry,
    "new_content": new_content,
    "crash": crash,
    "spec_paused": pause_in_spec,
    "rollback": rollback,
}

# Phase after one reconcile, for every starting phase (rows) and observation (columns).
EXPECTED = {
    "Pending": [
        "Pending",
        "Pending",
        "Pending",
        "RolledBack",
        "Pending",
        "Progressing",
        "Pending",
        "Pending",
        "Pending",
    ],
    "Gating": [
        "Gating",
        "Gating",
        "Gating",
        "RolledBack",
        "Gating",
        "Progressing",
        "Gating",
        "Gating",
        "Gating",
    ],
    "Migrating": [
        "Migrating",
        "Migrating",
        "Migrating",
        "RollingBack",
        "Migrating",
        "Progressing",
        "Migrating",
        "Migrating",
        "Progressing",
    ],
    "Progressing": [
        "Progressing",
        "Progressing",
        "Promoting",
        "RollingBack",
        "Progressing",
        "Progressing",
        "RollingBack",
        "Paused",
        "Progressing",
    ],
    "PausedStep": [
        "Paused",
        "Progressing",
        "Promoting",
        "RollingBack",
        "Paused",
        "Progressing",
        "RollingBack",
        "Paused",
        "Progressing",
    ],
    "PausedSpec": [
        "Paused",
        "Paused",
        "Paused",
        "RollingBack",
        "Paused",
        "Progressing",
        "RollingBack",
        "Paused",
        "Pending",
    ],
    "Promoting": [
        "Promoting",
        "Promoting",
        "Promoting",
        "RollingBack",
        "Promoting",
        "Progressing",
        "RollingBack",
        "Promoting",
        "Progressing",
    ],
    "Baking": [
        "Baking",
        "Succeeded",
        "Succeeded",
        "RollingBack",
        "Baking",
        "Progressing",
        "RollingBack",
        "Baking",
        "Progressing",
    ],
    "Succeeded": [
        "Succeeded",
        "Succeeded",
        "Succeeded",
        "Succeeded",
        "Succeeded",
        "Progressing",
        "Succeeded",
        "Succeeded",
        "Progressing",
    ],
    "RollingBack": [
        "RollingBack",
        "RollingBack",
        "RollingBack",
        "RollingBack",
        "RollingBack",
        "Progressing",
        "RollingBack",
        "RollingBack",
        "Progressing",
    ],
    "RollingBackMigration": [
        "RollingBack",
        "RollingBack",
        "RollingBack",
        "RollingBack",
        "RollingBack",
        "Progressing",
        "RollingBack",
        "RollingBack",
        "Progressing",
    ],
    "RolledBack": [
        "RolledBack",
        "RolledBack",
        "RolledBack",
        "RolledBack",
        "Progressing",
        "Progressing",
        "RolledBack",
        "RolledBack",
        "Progressing",
    ],
    "Failed": [
        "Failed",
        "Failed",
        "Failed",
        "RollingBack",
        "Progressing",
        "Progressing",
        "Failed",
        "Failed",
        "Progressing",
    ],
}


@pytest.mark.parametrize(
    ("start", "observation", "expected"),
    [
        (start, observation, row[index])
        for start, row in EXPECTED.items()
        for index, observation in enumerate(OBSERVATIONS)
    ],
)
def test_every_phase_under_every_observation(start: str, observation: str, expected: str) -> None:
    world = SETUPS[start]()
    OBSERVATIONS[observation](world)
    world.reconcile()
    assert world.phase == expected, world.status["message"]
