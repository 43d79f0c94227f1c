"""Progress never goes backwards, and commands act exactly once, whichever writes fail (hypothesis).

The simulated shell writes as the real one does: the status first, then the actions in order, the command
annotations' removal last; a failed write ends the pass. Faults are drawn per write.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simulation import ABORT, PROMOTE, RETRY, World, release_spec
from test_properties import apply

ROLLING_BACK = ("RollingBack", "RolledBack", "Failed")
COMPONENTS = ("api", "web")

steps = st.one_of(
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=300)),
    st.tuples(st.just("version"), st.sampled_from(["1.1.0", "1.2.0", "1.0.0"])),
    st.tuples(st.just("unready"), st.sampled_from(["shop-api-canary", "shop-api"])),
    st.tuples(st.just("ready"), st.just("")),
    st.tuples(st.just("crash"), st.sampled_from(["shop-api-canary", "shop-web"])),
    st.tuples(st.just("command"), st.sampled_from([PROMOTE, ABORT, RETRY, f"{PROMOTE}=full"])),
)


class Watcher:
    """What the workloads and status show after each pass, checked against the invariants."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.canary: dict[tuple[str, int], int] = {}  # (component, revision) -> replicas seen
        self.stable: dict[str, int] = {}  # component -> revision its stable Deployment runs
        self.weight: dict[tuple[int, int], int] = {}  # (revision, attempt) -> weight in status

    def check(self, why: object) -> None:
        world = self.world
        if world.phase in ROLLING_BACK:
            self.canary.clear()
            self.weight.clear()
            self.stable = {c: r for c in COMPONENTS if (r := world.revision_of(f"shop-{c}")) is not None}
            return
        key = (world.status["revision"], world.status["attempt"])
        assert world.status["canaryWeight"] >= self.weight.get(key, 0), (why, world.status["message"])
        self.weight[key] = world.status["canaryWeight"]
        for component in COMPONENTS:
            revision = world.revision_of(f"shop-{component}-canary")
            if revision is not None:
                replicas = world.replicas(f"shop-{component}-canary") or 0
                seen = self.canary.get((component, revision), 0)
                assert replicas >= seen, (why, component, revision, replicas, seen, world.status["message"])
                self.canary[(component, revision)] = replicas
            stable = world.revision_of(f"shop-{component}")
            if stable is not None:
                assert stable >= self.stable.get(component, 0), (why, component, world.status["message"])
                self.stable[component] = stable


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=1, max_size=20), st.integers(0, 2**32), st.sampled_from([0.1, 0.3, 0.6]))
def test_failed_writes_never_move_a_rollout_backwards_nor_lose_or_repeat_a_command(
    sequence: list[tuple[str, object]], seed: int, rate: float
) -> None:
    world = World(release_spec("1.0.0"))
    world.run_until("Succeeded")
    faults = random.Random(seed)
    world.fails = lambda _write: faults.random() < rate
    watcher = Watcher(world)
    given_commands: list[tuple[str, str]] = []
    replaced: set[tuple[str, str]] = set()  # overwritten by the next value before the operator saw them
    for number, (kind, value) in enumerate(sequence):
        if kind != "command":
            apply(world, (kind, value))
        else:
            key, _, full = str(value).partition("=")
            command = (key, f"{full or 'once'}-{number}")
            if key in world.annotations:
                replaced.add((key, world.annotations[key]))
            world.annotations[key] = command[1]
            given_commands.append(command)
        for _ in range(4):
            world.reconcile()
            watcher.check((kind, value))
    world.fails = None
    world.unready.clear()
    world.crashing.clear()
    world.settle()
    watcher.check("settled")

    acted = Counter(
        (f"shepherd.dev/{event.reason.lower()}", event.message.split(": ", 1)[0].split("=", 1)[1])
        for event in world.events
        if event.reason in ("Promote", "Abort", "Retry")
    )
    for command in given_commands:
        if command in replaced:
            assert acted[command] <= 1, command
        else:
            assert acted[command] == 1, (command, acted)
    assert not any(key in world.annotations for key in (PROMOTE, ABORT, RETRY)), world.annotations


HELD_AT_75 = {"canary": {"steps": [{"setWeight": 75}, {"pause": {}}]}}


def test_the_pass_that_promotes_can_fail_at_any_write_and_stable_never_returns_to_the_old_template() -> None:
    """The issue's case: stable went from the new template back to the old one before the rollout ended.
    The pass that promotes fails at its k-th write (0: the status), for every k; the operator goes on."""
    k = 0
    while True:
        world = World(release_spec("1.0.0", strategy=HELD_AT_75))
        world.run_until("Succeeded")
        world.set_spec(release_spec("1.1.0", strategy=HELD_AT_75))
        world.settle()
        assert world.phase == "Paused" and world.status["canaryWeight"] == 75
        world.annotations[PROMOTE] = "true"
        writes = [False] * k + [True]
        world.fails = lambda _write, writes=writes: writes.pop(0) if writes else False
        world.reconcile()  # promotes: the status says Promoting, then the stable takes the new template
        failed_at_all = not writes
        world.fails = None
        watcher = Watcher(world)
        watcher.check(k)
        for _ in range(8):
            world.reconcile()
            watcher.check(k)
        assert world.image("shop-api") == "shop/api:1.1.0"
        assert world.phase in ("Baking", "Succeeded"), world.status["message"]
        if not failed_at_all:
            break  # the pass had fewer than k writes: every position was tried
        k += 1
    assert k >= 3, "the promoting pass writes the status and at least two Deployments"
