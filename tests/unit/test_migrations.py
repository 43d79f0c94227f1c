"""Migrations: Jobs that run in order after the gates and before any traffic moves, their failures and
timeouts, retries, and the down migrations a rollback runs once no pod runs the new code."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from simulation import ABORT, PROMOTE, RETRY, ROLLBACK, World, ordered_spec, release_spec

from shepherd.core.gates import Approval
from shepherd.core.spec import Migration, RevisionContent, SpecError, content_of, parse_spec


def job(image: str) -> dict[str, Any]:
    pod = {"spec": {"restartPolicy": "Never", "containers": [{"name": "migrate", "image": image}]}}
    return {"spec": {"template": pod}}


def migration(name: str, *, down: bool = True, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "template": job(f"shop/{name}:up"), **extra}
    if down:
        entry["rollbackTemplate"] = job(f"shop/{name}:down")
    return entry


SCHEMA, BACKFILL = migration("schema"), migration("backfill")


def migrating(version: str, migrations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return release_spec(version, migrations=migrations, **extra)


def stable_world(**extra: Any) -> World:
    """Revision 1 (1.0.0, no migrations) serves all traffic."""
    world = World(release_spec("1.0.0", **extra))
    world.run_until("Succeeded")
    return world


def new_revision(migrations: list[dict[str, Any]], **extra: Any) -> World:
    world = stable_world(**extra)
    world.set_spec(migrating("1.1.0", migrations, **extra))
    world.settle()
    return world


def finish(world: World, name: str, outcome: str = "succeed") -> None:
    world.job_outcomes[name] = outcome
    world.settle()


def untouched(world: World) -> bool:
    """The stable revision serves everything, as before the revision started; no canary exists."""
    return (
        world.replicas("shop-api") == 4
        and world.image("shop-api") == "shop/api:1.0.0"
        and not any(name.endswith("-canary") for name in world.deployments)
    )


def records(world: World, key: str = "migrations") -> list[tuple[str, str]]:
    entry = world.status["history"][-1]
    return [(r["job"], r["state"]) for r in entry.get(key, [])]


# --- spec and revision content -------------------------------------------------------------------------


def test_migrations_are_parsed_with_their_backoff_limit_on_both_jobs() -> None:
    spec = parse_spec(
        migrating(
            "1.1.0", [{**SCHEMA, "timeout": "15m", "backoffLimit": 2}, migration("backfill", down=False)]
        )
    )
    schema, backfill = spec.migrations
    assert (schema.name, schema.timeout, backfill.timeout) == ("schema", timedelta(minutes=15), None)
    assert schema.template["spec"]["backoffLimit"] == 2
    assert schema.rollback_template is not None and schema.rollback_template["spec"]["backoffLimit"] == 2
    assert backfill.rollback_template is None and "backoffLimit" not in backfill.template["spec"]


@pytest.mark.parametrize(
    ("migrations", "field", "fragment"),
    [
        ("db", "spec.migrations", "a list of migrations"),
        ([migration(f"m{i}") for i in range(11)], "spec.migrations", "at most 10"),
        ([{**SCHEMA, "name": "Schema"}], "spec.migrations[0].name", "DNS label"),
        ([SCHEMA, SCHEMA], "spec.migrations[1].name", "duplicate migration name 'schema'"),
        ([{"name": "schema"}], "spec.migrations[0].template", "is required"),
        (
            [{**SCHEMA, "template": {"spec": {"template": {"spec": {"containers": []}}}}}],
            "spec.migrations[0].template.spec.template.spec.containers",
            "at least one container",
        ),
        (
            [{**SCHEMA, "rollbackTemplate": {"spec": {}}}],
            "spec.migrations[0].rollbackTemplate.spec.template.spec.containers",
            "at least one container",
        ),
        (
            [
                {
                    **SCHEMA,
                    "template": {
                        "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{}]}}}
                    },
                }
            ],
            "spec.migrations[0].template.spec.template.spec.restartPolicy",
            "Never or OnFailure",
        ),
        ([{**SCHEMA, "backoffLimit": 11}], "spec.migrations[0].backoffLimit", "0..10"),
        ([{**SCHEMA, "backoffLimit": True}], "spec.migrations[0].backoffLimit", "0..10"),
        ([{**SCHEMA, "timeout": "soon"}], "spec.migrations[0].timeout", "Go syntax"),
        ([{**SCHEMA, "timeout": "0s"}], "spec.migrations[0].timeout", "longer than 0s"),
    ],
)
def test_bad_migrations_are_named_by_field(migrations: Any, field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(migrating("1.1.0", migrations))
    assert error.value.field == field
    assert fragment in error.value.message


def test_migrations_are_revision_content_and_survive_the_revision_record() -> None:
    plain = content_of(parse_spec(release_spec("1.1.0")))
    migrated = content_of(parse_spec(migrating("1.1.0", [{**SCHEMA, "timeout": "90s"}])))
    assert migrated.hash != plain.hash, "adding a migration is a new revision"
    restored = RevisionContent.from_dict(migrated.to_dict())
    assert restored == migrated and restored.hash == migrated.hash
    assert restored.migrations[0].timeout == timedelta(seconds=90)
    assert "migrations" not in plain.to_dict(), "revisions recorded before migrations keep their hash"
    assert RevisionContent.from_dict(plain.to_dict()).migrations == ()


def test_a_recorded_migration_reads_back_from_plain_data() -> None:
    recorded = Migration.from_dict({"name": "schema", "template": job("a"), "rollbackTemplate": job("b")})
    assert (recorded.timeout, recorded.rollback_template) == (None, job("b"))


# --- Migrating -----------------------------------------------------------------------------------------


def test_migrations_run_one_after_the_other_before_any_traffic_moves() -> None:
    world = new_revision([SCHEMA, BACKFILL])
    assert world.phase == "Migrating"
    assert list(world.jobs) == ["shop-migrate-schema-r2"], "the second waits for the first"
    job = world.jobs["shop-migrate-schema-r2"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/schema:up"
    assert job["metadata"]["labels"]["shepherd.dev/job-for"] == "migrate-schema"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    expected = (
        "revision 2 (1.1.0): migration 1/2 schema: job/shop-migrate-schema-r2 running; "
        "kubectl logs job/shop-migrate-schema-r2"
    )
    assert world.status["message"] == expected
    reconciling = world.condition("Reconciling")
    assert reconciling is not None and reconciling["reason"] == "Migrating"
    world.advance(timedelta(hours=1))
    assert world.phase == "Migrating" and untouched(world), "nothing moves while a migration runs"

    finish(world, "shop-migrate-schema-r2")
    assert world.phase == "Migrating"
    assert sorted(world.jobs) == ["shop-migrate-backfill-r2", "shop-migrate-schema-r2"]
    assert untouched(world)
    finish(world, "shop-migrate-backfill-r2")
    assert world.phase == "Progressing"
    assert world.replicas("shop-api-canary") == 1
    assert records(world) == [
        ("shop-migrate-schema-r2", "Succeeded"),
        ("shop-migrate-backfill-r2", "Succeeded"),
    ]
    reasons = [e.reason for e in world.events]
    assert reasons.count("MigrationStarted") == 2 and reasons.count("MigrationSucceeded") == 2


def test_job_pods_restart_never_unless_the_template_says_on_failure() -> None:
    bare = {"name": "schema", "template": {"spec": {"template": {"spec": {"containers": [{"image": "m"}]}}}}}
    world = new_revision([bare])
    assert world.jobs["shop-migrate-schema-r2"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    on_failure = job("shop/schema:up")
    on_failure["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    world.set_spec(migrating("1.2.0", [{"name": "schema", "template": on_failure}]))
    finish(world, "shop-migrate-schema-r2")
    assert world.jobs["shop-migrate-schema-r3"]["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


def test_the_first_revision_migrates_before_anything_is_deployed() -> None:
    world = World(migrating("1.0.0", [SCHEMA]))
    world.settle()
    assert world.phase == "Migrating" and world.deployments == {}
    finish(world, "shop-migrate-schema-r1")
    assert world.replicas("shop-api") == 4
    world.run_until("Succeeded")


def test_gates_pass_before_the_first_migration_starts() -> None:
    world = stable_world()
    world.set_spec(migrating("1.1.0", [SCHEMA], gates=[{"name": "approval", "approval": {"count": 1}}]))
    world.settle()
    assert world.phase == "Gating" and world.jobs == {}
    world.approvals.append(Approval("alice-for-2", "shop", 2, "alice", world.now))
    world.settle()
    assert world.phase == "Migrating" and list(world.jobs) == ["shop-migrate-schema-r2"]


def test_a_failed_migration_fails_the_revision_and_leaves_the_stable_untouched() -> None:
    world = new_revision([SCHEMA, BACKFILL])
    finish(world, "shop-migrate-schema-r2", "fail")
    assert (world.phase, world.status["reason"]) == ("Failed", "MigrationFailed")
    message = world.status["message"]
    assert "migration 1/2 schema: job/shop-migrate-schema-r2 failed: BackoffLimitExceeded" in message
    assert "kubectl logs job/shop-migrate-schema-r2" in message
    assert message.endswith("no traffic moved, revision 1 keeps serving")
    assert untouched(world) and world.status["canaryWeight"] == 0
    assert list(world.jobs) == ["shop-migrate-schema-r2"], "later migrations never start"
    stalled = world.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "MigrationFailed"
    assert any(e.reason == "MigrationFailed" and e.type == "Warning" for e in world.events)
    world.advance(timedelta(hours=1))
    assert world.phase == "Failed" and untouched(world), "a failed migration is never rolled back on its own"


def test_a_retry_runs_every_migration_again_under_new_names() -> None:
    world = new_revision([SCHEMA, BACKFILL])
    finish(world, "shop-migrate-schema-r2")
    finish(world, "shop-migrate-backfill-r2", "fail")
    world.annotations[RETRY] = "true"
    world.settle()
    assert world.phase == "Migrating" and world.status["attempt"] == 2
    assert "shop-migrate-schema-r2-a2" in world.jobs and "shop-migrate-backfill-r2-a2" not in world.jobs
    assert "shop-migrate-backfill-r2" in world.jobs, "the failed run stays readable"
    finish(world, "shop-migrate-schema-r2-a2")
    finish(world, "shop-migrate-backfill-r2-a2")
    assert world.phase == "Progressing"


def test_a_migration_past_its_timeout_fails_the_revision_when_it_is_due() -> None:
    world = new_revision([{**SCHEMA, "timeout": "10m"}])
    assert world.decisions[-1].wake_at == world.now + timedelta(minutes=10)
    world.advance(timedelta(minutes=9, seconds=59))
    assert world.phase == "Migrating"
    world.advance(timedelta(seconds=1))
    assert (world.phase, world.status["reason"]) == ("Failed", "MigrationFailed")
    assert "job/shop-migrate-schema-r2 did not finish within its timeout 10m" in world.status["message"]
    assert untouched(world)


def test_a_promote_cannot_skip_migrations() -> None:
    world = new_revision([SCHEMA])
    world.annotations[PROMOTE] = "full"
    world.settle()
    assert world.phase == "Migrating"
    outcome = world.status["history"][-1]["commands"][0]["outcome"]
    assert outcome == "ignored: migrations must succeed before traffic moves; a promote cannot skip them"


def test_spec_paused_holds_the_next_migration_but_not_the_running_one() -> None:
    world = new_revision([SCHEMA, BACKFILL])
    world.set_spec(migrating("1.1.0", [SCHEMA, BACKFILL], paused=True))
    finish(world, "shop-migrate-schema-r2")
    assert world.phase == "Migrating" and "shop-migrate-backfill-r2" not in world.jobs
    assert world.status["message"].endswith("migration 2/2 backfill: held: spec.paused is true")
    world.set_spec(migrating("1.1.0", [SCHEMA, BACKFILL]))
    world.settle()
    assert "shop-migrate-backfill-r2" in world.jobs


def test_a_new_revision_waits_for_the_migration_of_the_one_it_superseded() -> None:
    world = new_revision([SCHEMA])
    world.set_spec(migrating("1.2.0", [SCHEMA]))
    world.settle()
    assert world.phase == "Migrating" and "shop-migrate-schema-r3" not in world.jobs
    assert world.status["message"].endswith("waiting for job/shop-migrate-schema-r2 to finish first")
    finish(world, "shop-migrate-schema-r2")
    assert "shop-migrate-schema-r3" in world.jobs


def test_migration_jobs_of_revisions_beyond_the_history_limit_are_deleted() -> None:
    limit = {"rollback": {"revisionHistoryLimit": 2}}
    world = World(migrating("1.0.0", [SCHEMA], **limit))
    world.job_outcomes = {f"shop-migrate-schema-r{number}": "succeed" for number in range(1, 5)}
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        world.set_spec(migrating(version, [SCHEMA], **limit))
        world.settle()
        world.annotations[PROMOTE] = "full"
        world.run_until("Succeeded")
    assert sorted(world.jobs) == ["shop-migrate-schema-r3", "shop-migrate-schema-r4"]


# --- down migrations -----------------------------------------------------------------------------------


def migrated_canary(migrations: list[dict[str, Any]]) -> World:
    """Revision 2 migrated and at its first canary weight."""
    world = new_revision(migrations)
    world.job_outcomes = {f"shop-migrate-{m['name']}-r2": "succeed" for m in migrations}
    for _ in migrations:
        world.settle()
    assert world.phase == "Progressing" and world.replicas("shop-api-canary") == 1
    return world


def test_an_aborted_canary_runs_the_down_migrations_last_first_once_the_canary_is_gone() -> None:
    world = migrated_canary([SCHEMA, BACKFILL])
    world.unready.add("shop-api")
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "RollingBack"
    assert not any(name.startswith("shop-rollback-") for name in world.jobs), "new code still runs"
    world.unready.clear()
    world.settle()
    assert world.phase == "RollingBack" and untouched(world)
    assert "shop-rollback-backfill-r2" in world.jobs and "shop-rollback-schema-r2" not in world.jobs
    down = world.jobs["shop-rollback-backfill-r2"]
    assert down["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/backfill:down"
    assert down["metadata"]["labels"]["shepherd.dev/job-for"] == "rollback-backfill"
    assert world.status["message"].endswith(
        "down migration 1/2 backfill: job/shop-rollback-backfill-r2 running; "
        "kubectl logs job/shop-rollback-backfill-r2"
    )
    finish(world, "shop-rollback-backfill-r2")
    assert world.phase == "RollingBack" and "shop-rollback-schema-r2" in world.jobs
    finish(world, "shop-rollback-schema-r2")
    assert world.phase == "RolledBack" and untouched(world)
    assert records(world, "downMigrations") == [
        ("shop-rollback-backfill-r2", "Succeeded"),
        ("shop-rollback-schema-r2", "Succeeded"),
    ]
    assert [e.reason for e in world.events].count("RollbackMigrationSucceeded") == 2


def test_after_promotion_the_down_migration_waits_for_the_old_template_back_on_the_stable() -> None:
    world = migrated_canary([SCHEMA])
    world.annotations[PROMOTE] = "full"
    world.run_until("Baking")
    assert world.image("shop-api") == "shop/api:1.1.0"
    world.unready.add("shop-api")
    world.annotations[ABORT] = "true"
    world.settle()
    assert "shop-rollback-schema-r2" not in world.jobs, "the stable still runs the new code"
    world.unready.clear()
    world.settle()
    assert world.image("shop-api") == "shop/api:1.0.0" and "shop-rollback-schema-r2" in world.jobs
    finish(world, "shop-rollback-schema-r2")
    assert world.phase == "RolledBack"


def test_an_automatic_rollback_runs_the_down_migration() -> None:
    world = migrated_canary([SCHEMA])
    world.crashing.add("shop-api-canary")
    world.settle()
    assert world.phase == "RollingBack" and "shop-rollback-schema-r2" in world.jobs
    finish(world, "shop-rollback-schema-r2")
    assert (world.phase, world.status["reason"]) == ("RolledBack", "ProgressDeadlineExceeded")


def test_only_migrations_that_ran_are_undone_and_only_those_with_a_rollback_template() -> None:
    world = new_revision([migration("seed", down=False), SCHEMA, BACKFILL])
    finish(world, "shop-migrate-seed-r2")
    finish(world, "shop-migrate-schema-r2")
    finish(world, "shop-migrate-backfill-r2", "fail")
    assert world.status["reason"] == "MigrationFailed"
    world.annotations[ABORT] = "true"
    world.settle()
    assert [name for name in world.jobs if name.startswith("shop-rollback-")] == ["shop-rollback-schema-r2"]
    assert "down migration 1/1 schema" in world.status["message"]
    finish(world, "shop-rollback-schema-r2")
    assert world.phase == "RolledBack"


def test_an_abort_mid_migration_waits_for_it_and_undoes_it_if_it_succeeded() -> None:
    world = new_revision([SCHEMA])
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "RollingBack" and "shop-rollback-schema-r2" not in world.jobs
    assert world.status["message"].endswith(
        "waiting for migration 1/1 schema (job/shop-migrate-schema-r2) to finish "
        "before undoing the migrations"
    )
    finish(world, "shop-migrate-schema-r2")
    assert "shop-rollback-schema-r2" in world.jobs
    finish(world, "shop-rollback-schema-r2")
    assert world.phase == "RolledBack"


def test_a_failed_down_migration_stops_the_rollback_and_an_abort_finishes_it_without_a_rerun() -> None:
    world = migrated_canary([SCHEMA])
    world.annotations[ABORT] = "true"
    world.settle()
    finish(world, "shop-rollback-schema-r2", "fail")
    assert (world.phase, world.status["reason"]) == ("Failed", "RollbackMigrationFailed")
    message = world.status["message"]
    assert "down migration 1/1 schema: job/shop-rollback-schema-r2 failed: BackoffLimitExceeded" in message
    assert "kubectl logs job/shop-rollback-schema-r2" in message and "shepherd.dev/abort" in message
    assert untouched(world)
    stalled = world.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "RollbackMigrationFailed"
    world.advance(timedelta(hours=1))
    assert world.phase == "Failed" and sorted(world.jobs) == [
        "shop-migrate-schema-r2",
        "shop-rollback-schema-r2",
    ]

    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "RolledBack" and "shop-rollback-schema-r2-a2" not in world.jobs


def test_a_down_migration_past_its_timeout_fails_the_rollback() -> None:
    world = migrated_canary([{**SCHEMA, "timeout": "5m"}])
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.decisions[-1].wake_at == world.now + timedelta(minutes=5)
    world.advance(timedelta(minutes=5))
    assert (world.phase, world.status["reason"]) == ("Failed", "RollbackMigrationFailed")
    assert "job/shop-rollback-schema-r2 did not finish within its timeout 5m" in world.status["message"]


def test_with_ordered_components_the_down_migration_waits_for_every_wave_to_be_back() -> None:
    world = World(ordered_spec("1.0.0"))
    world.run_until("Succeeded")
    world.set_spec(ordered_spec("1.1.0", migrations=[SCHEMA]))
    world.job_outcomes = {"shop-migrate-schema-r2": "succeed"}
    while "shop-frontend-canary" not in world.deployments:
        world.annotations[PROMOTE] = "true"
        world.advance(timedelta(minutes=1))
    world.annotations[ABORT] = "true"
    images = []
    while "shop-rollback-schema-r2" not in world.jobs:
        world.reconcile()
        images.append(world.image("shop-backend"))
    assert images[0] == "shop/backend:1.1.0", "the backend returns only once the frontend has"
    assert "shop-frontend-canary" not in world.deployments
    assert world.image("shop-backend") == "shop/backend:1.0.0" and world.ready_replicas("shop-backend") == 4
    finish(world, "shop-rollback-schema-r2")
    assert world.phase == "RolledBack"


def test_a_rollback_command_runs_the_recorded_revision_s_migrations_again_and_no_down_migration() -> None:
    world = World(migrating("1.0.0", [SCHEMA]))
    world.job_outcomes = {"shop-migrate-schema-r1": "succeed", "shop-migrate-schema-r2": "succeed"}
    world.run_until("Succeeded")
    world.set_spec(migrating("1.1.0", [migration("schema-v2")]))
    world.job_outcomes["shop-migrate-schema-v2-r2"] = "succeed"
    world.annotations[PROMOTE] = "full"
    world.run_until("Succeeded")

    world.annotations[ROLLBACK] = "1"
    world.settle()
    assert (world.status["revision"], world.phase) == (3, "Migrating")
    assert "shop-migrate-schema-r3" in world.jobs
    assert not any(name.startswith("shop-rollback-") for name in world.jobs)
    finish(world, "shop-migrate-schema-r3")
    assert world.phase == "Progressing" and world.image("shop-api-canary") == "shop/api:1.0.0"
