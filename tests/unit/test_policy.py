"""ReleasePolicies: namespace selection, freezes that hold every forward move but never a rollback,
org-wide gates, and failing closed on a policy the operator cannot read."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from simulation import ABORT, T0, World, release_spec, succeeded

from shepherd.core.gates import Approval
from shepherd.core.policy import applicable, selects
from shepherd.core.timefmt import format_time


def policy(name: str = "prod-rules", selector: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body = {
        "namespaceSelector": selector
        if selector is not None
        else {"matchLabels": {"environment": "production"}}
    }
    return {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": name},
        "spec": {**body, **spec},
    }


def freeze(start: timedelta, end: timedelta, reason: str = "year-end change freeze") -> dict[str, str]:
    return {"start": format_time(T0 + start), "end": format_time(T0 + end), "reason": reason}


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"environment": "production"}}, {"environment": "production"}, True),
        ({"matchLabels": {"environment": "production"}}, {"environment": "staging"}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            {"tier": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {"tier": "a"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {}, True),
    ],
)
def test_namespace_selectors(selector: dict[str, Any], labels: dict[str, str], selected: bool) -> None:
    assert selects(selector, labels) is selected


def production(world: World) -> World:
    world.namespace_labels = {"environment": "production"}
    return world


def test_a_freeze_holds_the_canary_at_its_weight_and_lets_go_when_it_ends() -> None:
    world = production(succeeded())
    world.set_spec(release_spec("1.1.0"))
    world.settle()
    assert world.status["canaryWeight"] == 25
    world.policies.append(policy(freezes=[freeze(timedelta(minutes=1), timedelta(hours=2))]))
    decision = world.advance(timedelta(minutes=1))
    assert world.phase == "Paused" and world.status["reason"] == "Freeze"
    assert world.status["canaryWeight"] == 25
    assert decision.wake_at == T0 + timedelta(hours=2), "the operator wakes exactly when the freeze ends"
    hold = world.status["history"][-1]["holds"][0]
    assert (hold["policy"], hold["freeze"]) == ("prod-rules", "year-end change freeze")
    world.now = T0 + timedelta(hours=2)
    world.settle()
    assert world.status["canaryWeight"] >= 50


def test_a_rollback_is_never_frozen() -> None:
    world = production(succeeded())
    world.set_spec(release_spec("1.1.0"))
    world.settle()
    world.policies.append(policy(freezes=[freeze(timedelta(0), timedelta(days=1))]))
    world.settle()
    world.annotations[ABORT] = "true"
    world.settle()
    assert world.phase == "RolledBack"
    assert "shop-api-canary" not in world.deployments


def test_a_freeze_holds_a_new_revision_before_it_starts() -> None:
    world = production(succeeded())
    world.policies.append(policy(freezes=[freeze(timedelta(0), timedelta(days=1))]))
    world.set_spec(release_spec("1.1.0"))
    world.settle()
    assert world.phase == "Gating"
    gate = world.status["gates"][0]
    assert gate["name"] == "freeze/prod-rules" and "year-end change freeze" in gate["message"]
    assert "shop-api-canary" not in world.deployments


def test_policies_apply_only_to_the_namespaces_they_select() -> None:
    world = succeeded()
    world.namespace_labels = {"environment": "staging"}
    world.policies.append(policy(freezes=[freeze(timedelta(0), timedelta(days=1))]))
    world.set_spec(release_spec("1.1.0"))
    world.settle()
    assert world.phase == "Progressing"


def test_policy_gates_add_to_the_release_own() -> None:
    world = production(succeeded())
    world.policies.append(policy(gates=[{"name": "two-approvals", "approval": {"count": 2}}]))
    world.set_spec(release_spec("1.1.0"))
    world.settle()
    assert world.phase == "Gating"
    assert [g["name"] for g in world.status["gates"]] == ["prod-rules/two-approvals"]


def test_an_unreadable_policy_fails_closed() -> None:
    broken = policy(freezes=[{"start": "soon", "end": "later", "reason": "x"}])
    (parsed,) = applicable([broken], {"environment": "production"})
    assert parsed.freezes[0].active(T0)
    world = production(succeeded())
    world.policies.append(broken)
    world.set_spec(release_spec("1.1.0"))
    world.settle()
    assert world.phase == "Gating"
    assert "the policy is invalid" in world.status["gates"][0]["message"]


def test_a_policy_can_require_sign_off_by_role_in_production() -> None:
    sign_off = {
        "name": "sign-off",
        "description": "production needs QA and SRE",
        "owner": "release-managers",
        "approval": {"from": [{"group": "qa"}, {"group": "sre"}]},
    }
    world = production(succeeded())
    world.policies.append(policy(gates=[sign_off]))
    world.set_spec(release_spec("1.1.0"))
    world.approvals.append(Approval("a", "shop", 2, "alice", world.now, group="qa"))
    world.settle()
    assert world.phase == "Gating"
    assert [(i["name"], i["group"], i["state"], i["owner"]) for i in world.status["checklist"]] == [
        ("prod-rules/sign-off", "qa", "Passed", "release-managers"),
        ("prod-rules/sign-off", "sre", "Pending", "release-managers"),
    ]
    world.approvals.append(Approval("b", "shop", 2, "bob", world.now, group="sre"))
    world.settle()
    assert world.phase == "Progressing"


def test_a_policy_gate_with_a_bad_role_fails_closed() -> None:
    broken = policy(gates=[{"name": "sign-off", "approval": {"from": [{"group": "qa", "count": 0}]}}])
    (parsed,) = applicable([broken], {"environment": "production"})
    assert "spec.gates[0].approval.from[0].count" in parsed.freezes[0].reason
