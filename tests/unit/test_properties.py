"""Invariants of the phase machine under arbitrary sequences of events (hypothesis)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simulation import ROLLBACK, World, ordered_spec, release_spec

PROMOTE, ABORT, RETRY = "shepherd.dev/promote", "shepherd.dev/abort", "shepherd.dev/retry"
COMPONENTS = {"api": 4, "web": 2}

events = st.one_of(
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=600)),
    st.tuples(st.just("version"), st.sampled_from(["1.1.0", "1.2.0", "1.0.0"])),
    st.tuples(st.just("unready"), st.sampled_from(["shop-api-canary", "shop-web-canary", "shop-api"])),
    st.tuples(st.just("ready"), st.just("")),
    st.tuples(st.just("crash"), st.sampled_from(["shop-api-canary", "shop-web"])),
    st.tuples(st.just("annotate"), st.sampled_from([PROMOTE, ABORT, RETRY])),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("rollback"), st.sampled_from(["previous", "1", "2", "3"])),
)


def apply(world: World, event: tuple[str, object]) -> None:
    kind, value = event
    if kind == "wait":
        world.now += timedelta(seconds=int(value))  # type: ignore[call-overload]
    elif kind == "version":
        world.set_spec(release_spec(str(value), paused=world.spec.get("paused", False)))
    elif kind == "unready":
        world.unready.add(str(value))
    elif kind == "ready":
        world.unready.clear()
        world.crashing.clear()
    elif kind == "crash":
        world.crashing.add(str(value))
    elif kind == "annotate":
        world.annotations[str(value)] = "true"
    elif kind == "pause":
        world.set_spec({**world.spec, "paused": bool(value)})
    elif kind == "rollback":
        world.annotations[ROLLBACK] = str(value)


def capacity(world: World) -> dict[str, int]:
    """Ready pods per component, stable and canary together."""
    return {
        name: world.ready_replicas(f"shop-{name}") + world.ready_replicas(f"shop-{name}-canary")
        for name in COMPONENTS
    }


def rounds(world: World, count: int = 4) -> list[dict[str, object]]:
    """A few reconciles, recording what each one left behind."""
    seen = []
    for _ in range(count):
        world.reconcile()
        seen.append(
            {
                "revision": (world.status["revision"], world.status["attempt"]),
                "phase": world.phase,
                "weight": world.status["canaryWeight"],
                "capacity": capacity(world),
                "step": world.status["currentStep"],
            }
        )
    return seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=25))
def test_weight_never_decreases_within_a_revision_unless_rolling_back(sequence: list) -> None:
    world = World(release_spec("1.0.0"))
    world.run_until("Succeeded")
    last: dict[tuple[int, int], int] = {}
    for event in sequence:
        apply(world, event)
        for seen in rounds(world):
            key = seen["revision"]
            if seen["phase"] in ("RollingBack", "RolledBack", "Failed"):
                last.pop(key, None)  # type: ignore[arg-type]
                continue
            assert seen["weight"] >= last.get(key, 0), (event, seen)  # type: ignore[arg-type,operator]
            last[key] = seen["weight"]  # type: ignore[index,assignment]


TIMED_STEPS = [
    {"setWeight": 25},
    {"pause": {"duration": "1m"}},
    {"setWeight": 50},
    {"pause": {"duration": "30s"}},
    {"setWeight": 75},
]


def timed_spec(version: str, paused: bool = False) -> dict[str, object]:
    return release_spec(version, paused=paused, strategy={"canary": {"steps": TIMED_STEPS}})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events.filter(lambda e: e[0] != "annotate" or e[1] != PROMOTE), min_size=1, max_size=25))
def test_never_promotes_without_passing_every_step(sequence: list) -> None:
    """Without a manual promote, a canary is promoted only after every step, timed pauses included."""
    world = World(timed_spec("1.0.0"))
    world.run_until("Succeeded")
    for event in sequence:
        if event[0] in ("version", "pause"):
            world.set_spec(
                timed_spec(
                    str(event[1]) if event[0] == "version" else world.spec["version"],
                    paused=bool(event[1]) if event[0] == "pause" else False,
                )
            )
        else:
            apply(world, event)
        before = dict(world.status)
        for seen in rounds(world):
            entering = seen["phase"] == "Promoting" and before.get("phase") not in ("Promoting", None)
            canary = world.status["stableRevision"] != world.status["revision"]
            if entering and canary and world.status["reason"] != "Reverted":
                entry = world.status["history"][-1]
                started = datetime.fromisoformat(entry["startedAt"].replace("Z", "+00:00"))
                assert seen["step"] == len(TIMED_STEPS)
                assert world.now - started >= timedelta(seconds=90), "both timed pauses must have elapsed"
                assert before.get("canaryWeight") == 75, "the last weight must have been reached first"
            before = dict(world.status)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=20))
def test_abort_always_ends_with_all_traffic_on_stable(sequence: list) -> None:
    world = World(release_spec("1.0.0"))
    world.run_until("Succeeded")
    for event in sequence:
        apply(world, event)
        rounds(world, 2)
    world.unready.clear()
    world.crashing.clear()
    world.annotations[ABORT] = "true"
    world.settle()
    settled_on_stable = world.status["revision"] == world.status["stableRevision"]
    assert world.phase == "RolledBack" or settled_on_stable, world.status["message"]
    assert not any(name.endswith("-canary") for name in world.deployments)
    stable = world.status["stableRevision"]
    for name, replicas in COMPONENTS.items():
        deployment = world.deployments[f"shop-{name}"]
        assert deployment["spec"]["replicas"] == replicas
        assert deployment["spec"]["template"]["metadata"]["labels"]["shepherd.dev/revision"] == str(stable)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events.filter(lambda e: e[0] in ("wait", "annotate", "pause", "version")), max_size=25))
def test_capacity_never_drops_below_the_requested_replicas(sequence: list) -> None:
    """With every pod healthy, no transition ever leaves fewer ready pods than requested."""
    world = World(release_spec("1.0.0"))
    world.run_until("Succeeded")
    world.set_spec(release_spec("1.1.0"))
    for event in sequence:
        apply(world, event)
        for seen in rounds(world):
            for name, wanted in COMPONENTS.items():
                assert seen["capacity"][name] >= wanted, (event, seen)  # type: ignore[index]


MIGRATION_JOB = {
    "spec": {"template": {"spec": {"containers": [{"name": "migrate", "image": "shop/migrate"}]}}}
}
MIGRATIONS = [
    {"name": name, "template": MIGRATION_JOB, "rollbackTemplate": MIGRATION_JOB}
    for name in ("schema", "backfill")
]


def migrating_spec(version: str) -> dict[str, object]:
    return release_spec(version, migrations=MIGRATIONS)


def migrated(world: World, revision: str) -> bool:
    """Every migration of the revision succeeded in one attempt."""
    attempts = [f"-a{n}" for n in range(2, 30)] + [""]
    return any(
        all(
            world.job_outcomes.get(f"shop-migrate-{m['name']}-r{revision}{suffix}") == "succeed"
            for m in MIGRATIONS
        )
        for suffix in attempts
    )


job_events = st.tuples(st.just("job"), st.sampled_from(["succeed", "fail"]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(events, job_events), min_size=1, max_size=25))
def test_no_pod_runs_a_revision_before_all_its_migrations_succeeded(sequence: list) -> None:
    world = World(migrating_spec("1.0.0"))
    world.job_outcomes = {f"shop-migrate-{m['name']}-r1": "succeed" for m in MIGRATIONS}
    world.run_until("Succeeded")
    for kind, value in sequence:
        if kind == "job":
            running = sorted(name for name in world.jobs if name not in world.job_outcomes)
            if running:
                world.job_outcomes[running[0]] = str(value)
        elif kind == "version":
            world.set_spec({**migrating_spec(str(value)), "paused": world.spec.get("paused", False)})
        else:
            apply(world, (kind, value))
        for _ in range(3):
            world.reconcile()
            for name, deployment in world.deployments.items():
                revision = deployment["spec"]["template"]["metadata"]["labels"]["shepherd.dev/revision"]
                if deployment["spec"]["replicas"] > 0:
                    assert migrated(world, revision), (name, revision, world.status["message"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans(),
    st.lists(
        events.filter(lambda e: e[0] in ("wait", "unready", "ready", "crash", "annotate", "pause")),
        min_size=1,
        max_size=25,
    ),
)
def test_a_dependent_component_never_runs_a_revision_its_dependency_does_not(
    from_second_wave: bool, sequence: list
) -> None:
    """The frontend depends on the backend: it gets revision 2 after the backend, and gives it back first."""
    world = World(ordered_spec("1.0.0"))
    world.run_until("Succeeded")
    world.set_spec(ordered_spec("1.1.0"))
    while from_second_wave and world.revision_of("shop-frontend-canary") is None:
        world.annotations[PROMOTE] = "true"
        world.settle()
    for event in sequence:
        kind, value = event
        if kind in ("unready", "crash"):
            value = str(value).replace("api", "backend").replace("web", "frontend")
        apply(world, (kind, value))
        for _ in range(4):
            world.reconcile()
            frontend = {world.revision_of("shop-frontend"), world.revision_of("shop-frontend-canary")}
            if 2 in frontend:
                assert world.revision_of("shop-backend") == 2, (event, world.status["message"])
