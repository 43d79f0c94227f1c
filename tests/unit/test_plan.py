"""A release's plan: a start time that holds a new revision in Gating, and what people are told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simulation import T0, release_spec, succeeded

from shepherd.core.plan import Change, Plan, format_wait, parse_plan, schedule
from shepherd.core.spec import SpecError, parse_spec

PLAN = {
    "notBefore": "2026-12-10T09:00:00Z",
    "summary": "Wishlist and faster checkout",
    "notes": "## Wishlist\nSave items for later.",
    "changes": [
        {"title": "Wishlist", "url": "https://tracker.example/SHOP-12", "id": "SHOP-12"},
        {"title": "Fix"},
    ],
    "owner": "team-shop",
    "risk": "medium",
}


def planned_spec(version: str, starts: datetime, **plan: Any) -> dict[str, Any]:
    when = starts.isoformat().replace("+00:00", "Z")
    return release_spec(version, plan={"notBefore": when, "summary": f"ships {version}", **plan})


def test_a_plan_is_parsed_and_written_back_as_it_was_given() -> None:
    plan = parse_plan(PLAN)
    assert plan is not None
    assert plan.not_before == datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    assert plan.changes == (Change("Wishlist", "https://tracker.example/SHOP-12", "SHOP-12"), Change("Fix"))
    assert plan.to_dict() == PLAN
    assert Plan.from_dict(plan.to_dict()) == plan
    assert parse_spec(release_spec(plan=PLAN)).plan == plan
    assert parse_spec(release_spec()).plan is None


@pytest.mark.parametrize(
    ("plan", "field", "words"),
    [
        ({"notBefore": "next tuesday"}, "spec.plan.notBefore", "is not an RFC 3339 time"),
        ({"notBefore": "2026-12-10T09:00:00"}, "spec.plan.notBefore", "with a time zone"),
        ({"notBefore": 1765357200}, "spec.plan.notBefore", "is not an RFC 3339 time"),
        ({"risk": "huge"}, "spec.plan.risk", "not one of low, medium, high"),
        ({"summary": "two\nlines"}, "spec.plan.summary", "one line"),
        ({"changes": [{"url": "https://x.example"}]}, "spec.plan.changes[0].title", "is required"),
        ({"changes": [{"title": "t", "url": "ftp://x"}]}, "spec.plan.changes[0].url", "http(s) URL"),
        ({"changes": "SHOP-12"}, "spec.plan.changes", "must be a list"),
        ({"owner": 7}, "spec.plan.owner", "must be a string"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_field(plan: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(release_spec(plan=plan))
    assert raised.value.field == field
    assert words in raised.value.message


def test_a_start_time_is_a_gate_while_ahead_and_never_holds_a_rollback() -> None:
    plan = parse_plan({"notBefore": "2026-12-10T09:00:00Z"})
    early = datetime(2026, 12, 10, 6, 50, tzinfo=UTC)
    assert schedule(plan, None, early) == (False, "scheduled for 2026-12-10T09:00:00Z (in 2h 10m)")
    assert schedule(plan, None, early + timedelta(hours=3)) == (
        True,
        "scheduled for 2026-12-10T09:00:00Z: due",
    )
    assert schedule(plan, 3, early) is None, "a rollback never waits for a plan"
    assert schedule(parse_plan({"summary": "no time"}), None, early) is None
    assert schedule(None, None, early) is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (45, "45s"), (59.2, "1m"), (60, "1m"), (7800, "2h 10m"), (90061, "1d 1h 2m"), (3600, "1h")],
)
def test_the_wait_is_shown_to_the_minute_rounded_up(seconds: float, shown: str) -> None:
    assert format_wait(timedelta(seconds=seconds)) == shown


@given(st.integers(min_value=60, max_value=400 * 86400))
def test_the_wait_shown_is_never_less_than_the_wait(seconds: int) -> None:
    parts = dict((p[-1], int(p[:-1])) for p in format_wait(timedelta(seconds=seconds)).split())
    shown = parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60
    assert seconds <= shown < seconds + 60


def test_a_planned_revision_gates_until_its_time_then_starts_at_once() -> None:
    world = succeeded()
    starts = world.now + timedelta(hours=2, minutes=10)
    world.set_spec(planned_spec("1.1.0", starts))
    decision = world.settle()
    assert world.phase == "Gating"
    assert "scheduled for" in world.status["message"] and "(in 2h 10m)" in world.status["message"]
    assert decision.wake_at == starts, "woken exactly at its time"
    gates = {g["name"]: g["state"] for g in world.status["gates"]}
    assert gates == {"plan/notBefore": "Pending"}
    assert "shop-api-canary" not in world.deployments, "nothing moves before its time"

    world.advance(starts - world.now - timedelta(seconds=1))
    assert world.phase == "Gating", "a second early is early"
    world.advance(timedelta(seconds=1))
    assert world.phase == "Progressing"
    assert world.replicas("shop-api-canary") == 1


def test_gates_may_pass_before_the_time_which_alone_holds_the_revision() -> None:
    world = succeeded()
    starts = world.now + timedelta(minutes=30)
    spec = planned_spec("1.1.0", starts)
    spec["gates"] = [{"name": "two", "approval": {"count": 1}}]
    world.set_spec(spec)
    world.settle()
    assert {g["name"]: g["state"] for g in world.status["gates"]} == {
        "two": "Pending",
        "plan/notBefore": "Pending",
    }


def test_a_time_already_past_starts_the_revision_with_no_gating() -> None:
    world = succeeded()
    world.set_spec(planned_spec("1.1.0", world.now - timedelta(minutes=1)))
    world.settle()
    assert world.phase == "Progressing"
    assert not any(e.reason == "Gating" for e in world.events[-5:])


def test_a_rollback_to_a_revision_never_waits_for_the_plan() -> None:
    world = succeeded()
    quick = {"canary": {"steps": [{"setWeight": 50}]}}
    world.set_spec(release_spec("1.1.0", strategy=quick))
    world.run_until("Succeeded")
    world.set_spec(release_spec("1.1.0", strategy=quick, plan={"notBefore": "2099-01-01T00:00:00Z"}))
    world.annotations["shepherd.dev/rollback"] = "1"
    world.settle()
    assert world.status["revision"] == 3 and world.status["history"][-1]["rollbackOf"] == 1
    assert world.phase != "Gating", world.status["message"]
    assert not any(e.reason == "Gating" for e in world.events[-5:])


def test_the_plan_is_recorded_with_its_revision_and_not_part_of_its_content() -> None:
    world = succeeded()
    world.set_spec(planned_spec("1.1.0", T0, owner="team-shop", risk="low"))
    world.settle()
    record = world.records[2]
    assert record["data"]["plan"] == {
        "notBefore": "2026-11-02T09:00:00Z",
        "summary": "ships 1.1.0",
        "owner": "team-shop",
        "risk": "low",
    }
    world.set_spec(planned_spec("1.1.0", T0, owner="team-shop", risk="high"))
    world.settle()
    assert world.status["revision"] == 2, "a plan edited in flight is not a new revision"
