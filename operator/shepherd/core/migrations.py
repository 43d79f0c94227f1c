"""Migrations: Jobs that change what the code runs against (a database schema, say) before a revision takes
any traffic, and their down Jobs (rollbackTemplate) when the revision is rolled back.

    Migrating    migration i's Job starts only once migration i-1's has succeeded; all succeeded: Progressing.
                 A failed Job, or one past its timeout: Failed (MigrationFailed); no traffic has moved.
    RollingBack  once every workload is back on the stable revision (no pod runs the new code any more),
                 the down Jobs of the migrations that succeeded run, last migration first: RolledBack.
                 A failed one: Failed (RollbackMigrationFailed), never looping.

Migration Jobs of a Release never run side by side: one starts only while no other (of a superseded
revision, an earlier attempt, a run past its timeout) is still running. Each Job run is recorded in the
revision's history entry (name, job, state, startedAt, finishedAt, message): the record says which
migrations ran, and when each Job started, for its timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shepherd.core import reasons
from shepherd.core.actions import CreateJob, Event
from shepherd.core.jobs import PURPOSE_LABEL, job_manifest, job_name, job_outcome
from shepherd.core.report import format_duration
from shepherd.core.spec import Migration
from shepherd.core.status import Phase, Rollout
from shepherd.core.timefmt import format_time, parse_time
from shepherd.core.workloads import ReleaseRef

Direction = Literal["up", "down"]
PURPOSES: Mapping[Direction, str] = {"up": "migrate-", "down": "rollback-"}


@dataclass(frozen=True)
class MigrationInputs:
    """The migrations of the revision in flight, the Jobs the shell observed, and what holds new ones."""

    release: ReleaseRef
    migrations: tuple[Migration, ...]
    jobs: Mapping[str, Mapping[str, Any]]  # Jobs the Release owns, by name
    held: str | None = None  # why no migration Job may start now: spec.paused, a freeze, a closed window


@dataclass(frozen=True)
class Progress:
    rollout: Rollout  # with the records of the Jobs started and finished
    done: bool = False
    failure: str | None = None  # the failed Job, for status.message


@dataclass(frozen=True)
class _Task:
    direction: Direction
    position: int  # 1-based, among the Jobs to run in this direction
    count: int
    migration: Migration
    job: str

    @property
    def label(self) -> str:
        kind = "migration" if self.direction == "up" else "down migration"
        return f"{kind} {self.position}/{self.count} {self.migration.name}"

    @property
    def reason(self) -> str:
        return reasons.MIGRATION if self.direction == "up" else reasons.ROLLBACK_MIGRATION

    @property
    def purpose(self) -> str:
        return PURPOSES[self.direction] + self.migration.name

    @property
    def template(self) -> Mapping[str, Any]:
        return self.migration.template if self.direction == "up" else self.migration.rollback_template or {}


def migrate(rollout: Rollout, inputs: MigrationInputs, now: datetime, events: list[Event]) -> Progress:
    """Phase Migrating: run the revision's migrations in order; done once every one has succeeded."""
    return _run(rollout, _up(rollout, inputs), inputs, now, events)


def migrate_down(rollout: Rollout, inputs: MigrationInputs, now: datetime, events: list[Event]) -> Progress:
    """Phase RollingBack, once the workloads are back on the stable revision: the down migrations.

    A migration still running when the rollback began is waited for; if it then succeeds it is undone
    too. A down Job that failed before (the revision stopped as RollbackMigrationFailed and was aborted
    again once someone repaired the schema) is not run again."""
    for task in _up(rollout, inputs):
        record = _record(rollout, task)
        if record is None or record.get("state") != "Running":
            continue
        finished = _finished(task, record, inputs.jobs, now)
        if finished is None and task.job in inputs.jobs:
            return Progress(rollout)
        if finished is not None:
            rollout = _store(rollout, task, finished)
            events.append(_event(task, finished))
    return _run(rollout, _down(rollout, inputs), inputs, now, events)


def migration_jobs(rollout: Rollout, inputs: MigrationInputs) -> list[CreateJob]:
    """The Jobs recorded as started but not there yet: created now (again, if someone deleted one)."""
    creations = []
    for task in _tasks(rollout, inputs):
        if _state(_record(rollout, task)) == "Running" and task.job not in inputs.jobs:
            manifest = job_manifest(inputs.release, task.job, task.purpose, rollout.revision, task.template)
            creations.append(CreateJob(manifest))
    return creations


def migration_deadlines(rollout: Rollout, inputs: MigrationInputs) -> list[datetime]:
    """When running migration Jobs reach their timeouts."""
    moments = []
    for task in _tasks(rollout, inputs):
        record = _record(rollout, task)
        started = parse_time(record.get("startedAt")) if record is not None else None
        if _state(record) == "Running" and started is not None and task.migration.timeout is not None:
            moments.append(started + task.migration.timeout)
    return moments


def migration_progress(rollout: Rollout, inputs: MigrationInputs) -> str:
    """What the migrations are doing now, for status.message; empty when none is left to run."""
    if rollout.phase is Phase.ROLLING_BACK:
        for task in _up(rollout, inputs):
            if _state(_record(rollout, task)) == "Running" and task.job in inputs.jobs:
                return f"waiting for {task.label} (job/{task.job}) to finish before undoing the migrations"
    for task in _tasks(rollout, inputs):
        record = _record(rollout, task)
        if _settled(task, record):
            continue
        if record is not None:
            return f"{task.label}: job/{task.job} running; kubectl logs job/{task.job}"
        held, busy = _held(task, inputs), _busy(inputs.jobs, task.job)
        if held is not None:
            return f"{task.label}: held: {held}"
        if busy is not None:
            return f"{task.label}: waiting for job/{busy} to finish first"
        return f"{task.label}: starting job/{task.job}"
    return ""


def _run(
    rollout: Rollout, tasks: list[_Task], inputs: MigrationInputs, now: datetime, events: list[Event]
) -> Progress:
    for task in tasks:
        record = _record(rollout, task)
        if _settled(task, record):
            continue
        if record is None:
            if _held(task, inputs) is not None or _busy(inputs.jobs, task.job) is not None:
                return Progress(rollout)
            started = {
                "name": task.migration.name,
                "job": task.job,
                "state": "Running",
                "startedAt": format_time(now),
            }
            events.append(
                Event(
                    "Normal",
                    reasons.job_event(task.reason, "Started"),
                    f"{task.label}: job/{task.job} started",
                )
            )
            return Progress(_store(rollout, task, started))
        if record.get("state") == "Failed":
            return Progress(rollout, failure=str(record.get("message") or task.label))
        finished = _finished(task, record, inputs.jobs, now) or _timed_out(task, record, now)
        if finished is None:
            return Progress(rollout)
        rollout = _store(rollout, task, finished)
        events.append(_event(task, finished))
        if finished["state"] == "Failed":
            return Progress(rollout, failure=str(finished["message"]))
    return Progress(rollout, done=True)


def _finished(
    task: _Task, record: Mapping[str, Any], jobs: Mapping[str, Mapping[str, Any]], now: datetime
) -> dict[str, Any] | None:
    outcome = job_outcome(jobs.get(task.job))
    if outcome.state == "Succeeded":
        message = f"{task.label}: job/{task.job} succeeded"
    elif outcome.state == "Failed":
        detail = outcome.detail or "no reason given"
        message = f"{task.label}: job/{task.job} failed: {detail}; kubectl logs job/{task.job}"
    else:
        return None
    return {**record, "state": outcome.state, "finishedAt": format_time(now), "message": message}


def _timed_out(task: _Task, record: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """Past its timeout the Job fails the revision; it is not stopped (activeDeadlineSeconds does that)."""
    started, timeout = parse_time(record.get("startedAt")), task.migration.timeout
    if started is None or timeout is None or now < started + timeout:
        return None
    message = (
        f"{task.label}: job/{task.job} did not finish within its timeout {format_duration(timeout)}; "
        f"kubectl logs job/{task.job}"
    )
    return {**record, "state": "Failed", "finishedAt": format_time(now), "message": message}


def _event(task: _Task, record: Mapping[str, Any]) -> Event:
    state = str(record.get("state"))
    return Event(
        "Normal" if state == "Succeeded" else "Warning",
        reasons.job_event(task.reason, state),
        str(record["message"]),
    )


def _settled(task: _Task, record: Mapping[str, Any] | None) -> bool:
    """Nothing left to do for this Job: it succeeded, or it is a down Job that failed before."""
    state = _state(record)
    return state == "Succeeded" or (state == "Failed" and task.direction == "down")


def _held(task: _Task, inputs: MigrationInputs) -> str | None:
    return inputs.held if task.direction == "up" else None  # a rollback is never held


def _busy(jobs: Mapping[str, Mapping[str, Any]], own: str) -> str | None:
    """Another migration Job of the Release that is still running."""
    for name, job in sorted(jobs.items()):
        purpose = str(((job.get("metadata") or {}).get("labels") or {}).get(PURPOSE_LABEL, ""))
        migrating = purpose.startswith(tuple(PURPOSES.values()))
        if name != own and migrating and job_outcome(job).state == "Running":
            return name
    return None


def _tasks(rollout: Rollout, inputs: MigrationInputs) -> list[_Task]:
    """The Jobs the current phase runs: migrations while Migrating, down migrations while RollingBack."""
    if rollout.phase is Phase.MIGRATING:
        return _up(rollout, inputs)
    if rollout.phase is Phase.ROLLING_BACK:
        return _down(rollout, inputs)
    return []


def _up(rollout: Rollout, inputs: MigrationInputs) -> list[_Task]:
    return _numbered("up", list(inputs.migrations), rollout, inputs)


def _down(rollout: Rollout, inputs: MigrationInputs) -> list[_Task]:
    # Only what ran is undone: the migrations of this attempt whose Jobs succeeded.
    ran = {r.get("name") for r in _records(rollout, "up") if r.get("state") == "Succeeded"}
    undo = [m for m in reversed(inputs.migrations) if m.name in ran and m.rollback_template is not None]
    return _numbered("down", undo, rollout, inputs)


def _numbered(
    direction: Direction, migrations: list[Migration], rollout: Rollout, inputs: MigrationInputs
) -> list[_Task]:
    """Named per revision and attempt, so a retry runs every Job again under a new name."""
    return [
        _Task(
            direction,
            position,
            len(migrations),
            migration,
            job_name(
                inputs.release.name, PURPOSES[direction] + migration.name, rollout.revision, rollout.attempt
            ),
        )
        for position, migration in enumerate(migrations, start=1)
    ]


def _records(rollout: Rollout, direction: Direction) -> tuple[Mapping[str, Any], ...]:
    entry = rollout.history[-1] if rollout.history else None
    if entry is None or (entry.revision, entry.attempt) != (rollout.revision, rollout.attempt):
        return ()
    return entry.migrations if direction == "up" else entry.down_migrations


def _record(rollout: Rollout, task: _Task) -> Mapping[str, Any] | None:
    return next((r for r in _records(rollout, task.direction) if r.get("job") == task.job), None)


def _state(record: Mapping[str, Any] | None) -> str | None:
    return None if record is None else str(record.get("state"))


def _store(rollout: Rollout, task: _Task, record: Mapping[str, Any]) -> Rollout:
    existing = _records(rollout, task.direction)
    if any(r.get("job") == task.job for r in existing):
        updated = tuple(record if r.get("job") == task.job else r for r in existing)
    else:
        updated = (*existing, record)
    field = "migrations" if task.direction == "up" else "down_migrations"
    return rollout.update_current_entry(**{field: updated})
