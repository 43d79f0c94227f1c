"""`shepherd lint`'s warnings: valid Releases whose canary steps replica routing cannot give exactly."""

from __future__ import annotations

import copy
from typing import Any

from simulation import release_spec

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
