"""`shepherd lint`: its warnings (valid Releases whose canary steps replica routing cannot give exactly), and
the fields it names."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from simulation import release_spec

from shepherd.cli import main
from shepherd.lint import lint_documents, warn_documents


def release(name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": name},
        "spec": release_spec("1.0.0", **overrides),
    }


def test_replica_routing_by_default_or_by_name_warns_of_each_inexact_step() -> None:
    steps = {"steps": [{"setWeight": 25}, {"setWeight": 50}, {"setWeight": 75}]}
    named = {"canary": {**steps, "trafficRouting": {"replicas": {}}}}
    documents = [release("default", strategy={"canary": steps}), release("named", strategy=named)]
    assert list(lint_documents(documents)) == []
    assert [line.split(": ", 2)[:2] for line in warn_documents(documents)] == [
        ["Release default", "spec.strategy.canary.steps[0].setWeight"],
        ["Release default", "spec.strategy.canary.steps[2].setWeight"],
        ["Release named", "spec.strategy.canary.steps[0].setWeight"],
        ["Release named", "spec.strategy.canary.steps[2].setWeight"],
    ]


def test_other_kinds_and_exact_weights_bring_no_warning() -> None:
    exact = release("exact", strategy={"canary": {"steps": [{"setWeight": 50}, {"setWeight": 100}]}})
    policy = {"apiVersion": "shepherd.dev/v1alpha1", "kind": "ReleasePolicy", "metadata": {"name": "p"}}
    assert list(warn_documents([exact, policy, "not a manifest"])) == []


def test_gateway_api_routing_brings_no_warning() -> None:
    container = {"name": "api", "image": "shop:2", "ports": [{"name": "http", "containerPort": 8080}]}
    routed = release(
        "routed",
        components=[{"name": "api", "replicas": 2, "template": {"spec": {"containers": [container]}}}],
        strategy={
            "canary": {"trafficRouting": {"gatewayAPI": {"httpRoute": "shop"}}, "steps": [{"setWeight": 25}]}
        },
    )
    assert list(lint_documents([routed])) == []
    assert list(warn_documents([routed])) == []
    by_replicas = copy.deepcopy(routed)
    by_replicas["spec"]["strategy"]["canary"]["trafficRouting"] = {"replicas": {}}
    assert len(list(warn_documents([by_replicas]))) == 1


def test_lint_refuses_a_role_without_a_group_or_with_a_count_of_0_naming_the_field(tmp_path: Path) -> None:
    roles = [{"count": 1}, {"group": "sre", "count": 0}]
    bad = release("shop", gates=[{"name": "sign-off", "approval": {"from": roles}}])
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(yaml.safe_dump(bad))

    result = CliRunner().invoke(main, ["lint", str(manifest)])

    assert result.exit_code == 1
    assert f"{manifest}: Release shop: spec.gates[0].approval.from[0].group: Required value" in result.output
    assert (
        f"{manifest}: Release shop: spec.gates[0].approval.from[1].count: Invalid value: 0: "
        "spec.gates[0].approval.from[1].count in body should be greater than or equal to 1"
    ) in result.output


def test_lint_passes_a_sign_off_by_role_with_an_owner() -> None:
    good = release(
        "shop", gates=[{"name": "sign-off", "owner": "sre", "approval": {"from": [{"group": "qa"}]}}]
    )
    assert list(lint_documents([good])) == []
