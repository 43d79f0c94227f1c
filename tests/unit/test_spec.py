"""The operator's own spec parser: what reaches it past the schema is named precisely."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from simulation import release_spec

from shepherd.core.spec import (
    ApprovalGate,
    Pause,
    RevisionContent,
    Role,
    SetWeight,
    SpecError,
    content_of,
    parse_release_name,
    parse_spec,
)


def test_defaults_an_sre_can_predict() -> None:
    spec = parse_spec(
        {"version": "1", "components": [{"name": "a", "template": {"spec": {"containers": [{}]}}}]}
    )
    assert spec.progress_deadline == timedelta(minutes=10)
    assert spec.components[0].replicas == 1
    assert spec.steps == ()
    assert spec.bake is None
    assert spec.automatic_rollback is True
    assert spec.revision_history_limit == 10
    assert spec.paused is False


def test_steps_and_durations_are_parsed() -> None:
    spec = parse_spec(release_spec())
    assert spec.steps == (
        SetWeight(25),
        Pause(timedelta(minutes=1)),
        SetWeight(50),
        Pause(None),
        SetWeight(75),
    )
    assert spec.bake == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"version": ""}, "spec.version", "required"),
        ({"version": "1.0 beta"}, "spec.version", "valid label value"),
        ({"components": []}, "spec.components", "at least one"),
        ({"progressDeadline": "10 minutes"}, "spec.progressDeadline", "Go syntax"),
        ({"progressDeadline": "0s"}, "spec.progressDeadline", "longer than 0s"),
        ({"paused": "yes"}, "spec.paused", "true or false"),
        ({"postRelease": {"bake": 5}}, "spec.postRelease.bake", "duration string"),
        ({"rollback": {"revisionHistoryLimit": 0}}, "spec.rollback.revisionHistoryLimit", "1..100"),
        (
            {"strategy": {"canary": {"steps": [{"setWeight": 101}]}}},
            "spec.strategy.canary.steps[0].setWeight",
            "0..100",
        ),
        (
            {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}}},
            "spec.strategy.canary.steps[1].setWeight",
            "must not decrease",
        ),
        ({"strategy": {"canary": {"steps": [{}]}}}, "spec.strategy.canary.steps[0]", "exactly one"),
        (
            {"strategy": {"canary": {"steps": [{"pause": {"duration": "soon"}}]}}},
            "spec.strategy.canary.steps[0].pause.duration",
            "invalid duration",
        ),
    ],
)
def test_bad_fields_are_named(change: dict, field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(release_spec(**change))
    assert caught.value.field == field
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("component", "field", "fragment"),
    [
        ({"name": "API", "template": {"spec": {"containers": [{}]}}}, "spec.components[1].name", "DNS label"),
        ({"name": "api", "template": {"spec": {"containers": [{}]}}}, "spec.components[1].name", "duplicate"),
        (
            {"name": "x", "replicas": 0, "template": {"spec": {"containers": [{}]}}},
            "spec.components[1].replicas",
            ">= 1",
        ),
        (
            {"name": "x", "template": {"spec": {"containers": []}}},
            "spec.components[1].template.spec.containers",
            "at least one",
        ),
    ],
)
def test_bad_components_are_named(component: dict, field: str, fragment: str) -> None:
    spec = release_spec()
    spec["components"] = [spec["components"][0], component]
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert (caught.value.field, fragment in caught.value.message) == (field, True)


def test_release_name_must_fit_a_label() -> None:
    parse_release_name("a" * 63)
    with pytest.raises(SpecError, match=r"metadata\.name"):
        parse_release_name("a" * 64)


def test_content_hash_ignores_replicas_and_steps_but_not_templates_or_version() -> None:
    base = content_of(parse_spec(release_spec()))
    scaled = release_spec()
    scaled["components"][0]["replicas"] = 9
    assert content_of(parse_spec(scaled)).hash == base.hash
    assert content_of(parse_spec(release_spec(strategy={}))).hash == base.hash
    assert content_of(parse_spec(release_spec("1.0.1"))).hash != base.hash
    changed = release_spec()
    changed["components"][1]["template"]["spec"]["containers"][0]["image"] = "other"
    assert content_of(parse_spec(changed)).hash != base.hash


def test_revision_content_round_trips_through_its_record() -> None:
    content = content_of(parse_spec(release_spec()))
    assert RevisionContent.from_dict(content.to_dict()) == content
    assert RevisionContent.from_dict(content.to_dict()).hash == content.hash


def test_an_approval_gate_asks_for_a_count_or_for_roles_with_a_description_and_an_owner() -> None:
    gates = [
        {"name": "two", "approval": {"count": 2}},
        {
            "name": "sign-off",
            "description": "QA and SRE have signed off",
            "owner": "team-shop",
            "approval": {"from": [{"group": "qa"}, {"group": "sre", "count": 2}]},
        },
    ]
    plain, roles = parse_spec(release_spec(gates=gates)).gates
    assert plain.kind == ApprovalGate(2) and (plain.description, plain.owner) == ("", "")
    assert roles.kind == ApprovalGate(3, (Role("qa", 1), Role("sre", 2)))
    assert (roles.description, roles.owner) == ("QA and SRE have signed off", "team-shop")


@pytest.mark.parametrize(
    ("gate", "field", "fragment"),
    [
        ({}, "spec.gates[0].approval", "exactly one of count"),
        ({"count": 1, "from": [{"group": "qa"}]}, "spec.gates[0].approval", "exactly one of count"),
        ({"from": []}, "spec.gates[0].approval.from", "at least one role"),
        ({"from": [{"count": 1}]}, "spec.gates[0].approval.from[0].group", "must name a Kubernetes group"),
        ({"from": [{"group": ""}]}, "spec.gates[0].approval.from[0].group", "must name a Kubernetes group"),
        ({"from": [{"group": "qa", "count": 0}]}, "spec.gates[0].approval.from[0].count", "1..100"),
        ({"from": [{"group": "qa"}, {"group": "qa"}]}, "spec.gates[0].approval.from[1].group", "duplicate"),
        ({"from": "qa"}, "spec.gates[0].approval.from", "must be a list"),
    ],
)
def test_bad_sign_offs_are_named(gate: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(release_spec(gates=[{"name": "sign-off", "approval": gate}]))
    assert caught.value.field == field
    assert fragment in caught.value.message


@pytest.mark.parametrize(("key", "value"), [("owner", 7), ("description", "x" * 1025)])
def test_a_bad_gate_owner_or_description_is_named(key: str, value: object) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(release_spec(gates=[{"name": "two", "approval": {"count": 2}, key: value}]))
    assert caught.value.field == f"spec.gates[0].{key}"
