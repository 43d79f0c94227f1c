"""The shell's status write: a merge patch of only what changed."""

import copy
import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simulation import ABORT, PROMOTE, World, release_spec, succeeded

from shepherd.core.gates import Approval
from shepherd.core.model import ReleaseObject
from shepherd.core.spec import ReleaseSpec, SpecError
from shepherd.reconcile import ParsedSpecs, status_patch


def test_status_patch_sends_changes_and_nulls_for_removed_keys() -> None:
    old = {"phase": "Progressing", "canaryWeight": 25, "unreadySince": "t", "history": [1]}
    new = {"phase": "Progressing", "canaryWeight": 50, "unreadySince": None, "history": [1]}
    assert status_patch(old, new) == {"canaryWeight": 50, "unreadySince": None}


def test_no_patch_when_nothing_changed() -> None:
    same = {"phase": "Succeeded", "stepSince": None}
    assert status_patch({"phase": "Succeeded"}, same) == {}


# --- a pass that finds nothing changed decides nothing again -------------------------------------------

COUNTDOWN = re.compile(r"\(in [0-9dhms ]+\)")


def without_countdown(value: Any) -> Any:
    """A planned revision's message counts down to its time: the one thing of a status that time alone
    changes before the decision is due, and that a skipped pass leaves as it was last written."""
    if isinstance(value, str):
        return COUNTDOWN.sub("(in …)", value)
    if isinstance(value, dict):
        return {k: without_countdown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_countdown(v) for v in value]
    return value


def plan_in(world: World, minutes: int) -> dict[str, Any]:
    return {"notBefore": (world.now + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")}


STEPS = {
    "new version": lambda w: w.set_spec({**w.spec, **release_spec(f"1.{len(w.decisions)}.0")}),
    "planned version": lambda w: w.set_spec(
        {**w.spec, **release_spec(f"2.{len(w.decisions)}.0"), "plan": plan_in(w, 90)}
    ),
    "approval gate": lambda w: w.set_spec({**w.spec, "gates": [{"name": "ok", "approval": {"count": 1}}]}),
    "approve": lambda w: w.approvals.append(Approval("a", "shop", w.status.get("revision", 0), "al", w.now)),
    "promote": lambda w: w.annotations.update({PROMOTE: "true"}),
    "abort": lambda w: w.annotations.update({ABORT: "true"}),
    "a minute": lambda w: setattr(w, "now", w.now + timedelta(minutes=1)),
    "an hour": lambda w: setattr(w, "now", w.now + timedelta(hours=1)),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=8),
    st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=1, max_size=3),
)
def test_before_its_due_time_a_release_whose_observations_did_not_change_decides_the_same(
    steps: list[str], probes: list[float]
) -> None:
    """The other half of skipping a pass (the cache's test shows equal fingerprints mean equal
    observations): with the same observations, any moment before the decision's wake_at decides the same:
    no action, no Event, the same status. So for any sequence of changes the skip hides no decision."""
    world = succeeded()
    for step in steps:
        STEPS[step](world)
        rested = world.settle()
        horizon = rested.wake_at or world.now + timedelta(hours=6)
        for probe in probes:
            later = copy.deepcopy(world)
            # Strictly before the due time: a fraction of the interval can round up onto it.
            before = horizon - timedelta(microseconds=1)
            later.now = max(world.now, min(world.now + (horizon - world.now) * probe, before))
            decision = later.reconcile()
            assert decision.actions == () and decision.events == (), (step, probe, decision)
            assert without_countdown(decision.status) == without_countdown(world.status), (step, probe)


def test_a_spec_is_parsed_once_per_generation_and_an_error_kept_as_raised() -> None:
    specs = ParsedSpecs(size=2)
    first = specs.of("uid-1", 3, release_spec("1.0.0"))
    assert specs.of("uid-1", 3, release_spec("9.9.9")) is first, "one generation, one parse"
    assert isinstance(specs.of("uid-1", 4, release_spec("1.1.0")), ReleaseSpec)
    bad = specs.of("uid-2", 1, {**release_spec(), "version": ""})
    assert isinstance(bad, SpecError) and bad.field == "spec.version"
    view = ReleaseObject("shop", "prod", "uid-2", 1, {}, {}, {}, parsed=bad)
    with pytest.raises(SpecError, match=r"spec\.version"):
        view.release_spec()
    assert specs.of("uid-1", 3, release_spec("9.9.9")) is not first, "the oldest of three let go (size 2)"
    assert specs.of("", 0, release_spec("2.0.0")).version == "2.0.0", "no uid or generation: never kept"
