"""The readiness checklist: one item per gate and per role, its owner, who signed and when it passed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from simulation import T0, release_spec, succeeded

from shepherd.core.checklist import MAX_ITEMS, checklist, open_items
from shepherd.core.gates import Approval, GateResult, GateState, RoleResult
from shepherd.core.spec import parse_spec
from shepherd.core.timefmt import format_seconds

GATES: list[dict[str, Any]] = [
    {
        "name": "sign-off",
        "description": "QA and SRE have signed off",
        "approval": {"from": [{"group": "qa"}, {"group": "sre", "count": 2}]},
    },
    {"name": "smoke", "owner": "team-shop", "job": {"template": {"spec": {"template": {"spec": {}}}}}},
    {"name": "two-approvals", "approval": {"count": 2}},
]
SPECS = parse_spec(
    release_spec(
        gates=[{**GATES[0]}, {**GATES[2]}, {"name": "after-backend", "release": {"name": "backend"}}]
    )
).gates
ALICE = Approval("a", "shop", 2, "alice", T0, group="qa")
BOB = Approval("b", "shop", 2, "bob", T0 + timedelta(minutes=1), group="sre")
CAROL = Approval("c", "shop", 2, "carol", None)


def results(sre: tuple[Approval, ...] = (BOB,)) -> tuple[GateResult, ...]:
    sre_state: GateState = "Passed" if len(sre) >= 2 else "Pending"
    roles = (RoleResult("qa", 1, "Passed", (ALICE,)), RoleResult("sre", 2, sre_state, sre))
    return (
        GateResult("sign-off", "Pending", "sign-off of revision 2: ...", (ALICE, *sre), roles),
        GateResult("two-approvals", "Pending", "1/2 approvals of revision 2: carol", (CAROL,)),
        GateResult("after-backend", "Passed", "release prod/backend is Succeeded at 2.0.0"),
        GateResult("freeze/prod-rules", "Pending", "freeze of policy prod-rules: year end"),
    )


def test_every_gate_is_an_item_and_an_approval_gate_with_from_one_per_role() -> None:
    items = checklist(SPECS, results(), [], T0)

    assert [(i["name"], i.get("group"), i["kind"], i["state"]) for i in items] == [
        ("sign-off", "qa", "approval", "Passed"),
        ("sign-off", "sre", "approval", "Pending"),
        ("two-approvals", None, "approval", "Pending"),
        ("after-backend", None, "release", "Passed"),
        ("freeze/prod-rules", None, "freeze", "Pending"),
    ]
    qa, sre, plain = items[0], items[1], items[2]
    assert qa["owner"] == "qa" and qa["description"] == "QA and SRE have signed off"
    assert qa["signedBy"] == [{"user": "alice", "group": "qa", "at": "2026-11-02T09:00:00.000Z"}]
    assert qa["message"] == "1/1 sign-offs from qa: alice"
    assert sre["message"] == "1/2 sign-offs from sre: bob"
    assert plain["signedBy"] == [{"user": "carol"}], "an approval's time is shown only when known"
    assert "owner" not in plain and "description" not in plain
    assert [i["name"] for i in open_items(items)] == ["sign-off", "two-approvals", "freeze/prod-rules"]


def test_a_gate_owner_owns_each_of_its_roles() -> None:
    specs = parse_spec(release_spec(gates=[{**GATES[0], "owner": "release-managers"}])).gates
    items = checklist(specs, results()[:1], [], T0)
    assert [i["owner"] for i in items] == ["release-managers", "release-managers"]


def test_passed_at_is_when_an_item_passed_and_stays_while_it_is_passed() -> None:
    first = checklist(SPECS, results(), [], T0)
    assert first[0]["passedAt"] == "2026-11-02T09:00:00Z" and "passedAt" not in first[1]
    later = T0 + timedelta(minutes=5)
    erin = Approval("e", "shop", 2, "erin", later, group="sre")
    second = checklist(SPECS, results(sre=(BOB, erin)), first, later)
    assert second[0]["passedAt"] == "2026-11-02T09:00:00Z", "kept from the checklist before"
    assert second[1]["passedAt"] == "2026-11-02T09:05:00Z", "the sre role passed now"
    assert [s["user"] for s in second[1]["signedBy"]] == ["bob", "erin"]


def test_the_authors_sign_off_is_named_on_the_role_it_was_for() -> None:
    author = Approval("x", "shop", 2, "dave", T0, group="sre")
    barred = GateResult(
        "sign-off",
        "Pending",
        "...",
        (ALICE,),
        (RoleResult("qa", 1, "Passed", (ALICE,)), RoleResult("sre", 2, "Pending")),
        (author,),
    )
    items = checklist(SPECS, (barred,), [], T0)
    assert items[0]["message"] == "1/1 sign-offs from qa: alice"
    assert items[1]["message"] == (
        "0/2 sign-offs from sre: nobody yet; "
        "dave's sign-off does not count: dave last changed the spec (four eyes)"
    )


@given(st.integers(min_value=0, max_value=3 * MAX_ITEMS))
def test_the_checklist_is_bounded(gates: int) -> None:
    many = tuple(GateResult(f"g{n}", "Passed", "ok") for n in range(gates))
    items = checklist((), many, [], T0)
    assert len(items) == min(gates, MAX_ITEMS)


def test_a_gating_release_shows_its_checklist_and_keeps_it_once_started() -> None:
    world = succeeded()
    world.set_spec(release_spec("1.1.0", gates=[GATES[0]]))
    world.approvals.append(Approval("a", "shop", 2, "alice", world.now, group="qa"))
    world.settle()
    qa_passed = world.now
    assert world.phase == "Gating"
    assert [(i["group"], i["state"]) for i in world.status["checklist"]] == [
        ("qa", "Passed"),
        ("sre", "Pending"),
    ]
    world.advance(timedelta(minutes=3))
    world.approvals.extend(Approval(n, "shop", 2, n, world.now, group="sre") for n in ("bob", "erin"))
    world.settle()
    assert world.phase == "Progressing"
    kept = world.status["checklist"]
    assert [i["passedAt"] for i in kept] == [format_seconds(qa_passed), format_seconds(world.now)]
    assert world.now == qa_passed + timedelta(minutes=3)
    world.advance(timedelta(minutes=2))
    assert world.status["checklist"] == kept, "after the gates, the checklist is what let the revision start"
