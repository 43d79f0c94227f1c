"""The chart's ValidatingAdmissionPolicy for ReleaseApprovals: rendered by Helm's SDK, its CEL evaluated by
cel-python against the admission requests the API server would send."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import helm_python as helm
import pytest
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from shepherd.plugin import approval_manifest

CHART = Path(__file__).resolve().parents[2] / "charts" / "shepherd"
ALICE = "alice@example.com"
MALLORY = "mallory@example.com"


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The rendered objects by kind (the chart has one object of each kind)."""
    manifests = chart.render(values, name="shepherd", namespace="shepherd-system")
    return {doc["kind"]: doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc}


@pytest.fixture(scope="module")
def policy(chart: helm.Chart) -> dict[str, Any]:
    return render(chart)["ValidatingAdmissionPolicy"]


def approval(approver: str = ALICE) -> dict[str, Any]:
    return {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleaseApproval",
        "metadata": {"name": "shop-3-alice", "namespace": "prod"},
        "spec": {"release": "shop", "revision": 3, "approver": approver, "comment": "dashboards are quiet"},
    }


def evaluate(expression: str, activation: dict[str, Any]) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression)).evaluate(activation)


def denials(
    policy: dict[str, Any], operation: str, user: str, obj: dict[str, Any], old: dict[str, Any] | None = None
) -> list[str]:
    """The messages the API server denies the request with; empty when the policy admits it."""
    request = {
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "namespace": obj["metadata"]["namespace"],
        "name": obj["metadata"]["name"],
    }
    # oldObject is null on CREATE, as the API server binds it.
    activation = {"object": json_to_cel(obj), "oldObject": json_to_cel(old), "request": json_to_cel(request)}
    messages = []
    for validation in policy["spec"]["validations"]:
        try:
            admitted = evaluate(validation["expression"], activation)
        except CELEvalError:
            admitted = False  # failurePolicy Fail: an expression that cannot be evaluated denies
        if isinstance(admitted, celtypes.BoolType) and admitted:
            continue
        if "messageExpression" in validation:
            messages.append(str(evaluate(validation["messageExpression"], activation)))
        else:
            messages.append(validation["message"])
    return messages


def test_an_approval_by_its_approver_is_admitted(policy: dict[str, Any]) -> None:
    assert denials(policy, "CREATE", ALICE, approval(ALICE)) == []


def test_the_approval_of_kubectl_release_approve_is_admitted_for_its_user(policy: dict[str, Any]) -> None:
    created = approval_manifest("prod", "shop", 3, ALICE, "dashboards are quiet", "uid-of-shop")

    assert denials(policy, "CREATE", ALICE, created) == []
    assert denials(policy, "CREATE", MALLORY, created) != []


def test_an_approval_in_someone_elses_name_is_denied_naming_both(policy: dict[str, Any]) -> None:
    assert denials(policy, "CREATE", MALLORY, approval(ALICE)) == [
        "spec.approver must be the user creating the approval "
        f'(spec.approver is "{ALICE}", the request comes from "{MALLORY}")'
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [("approver", MALLORY), ("revision", 4), ("release", "checkout"), ("comment", "changed my mind")],
)
def test_changing_an_approval_is_denied(policy: dict[str, Any], field: str, value: Any) -> None:
    old = approval(ALICE)
    new = copy.deepcopy(old)
    new["spec"][field] = value

    assert denials(policy, "UPDATE", ALICE, new, old) == [
        "an approval cannot be changed; delete it and create a new one"
    ]


def test_a_metadata_only_update_by_someone_else_is_admitted(policy: dict[str, Any]) -> None:
    old = approval(ALICE)
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "shop"}
    gitops = "system:serviceaccount:argocd:argocd-application-controller"

    assert denials(policy, "UPDATE", gitops, new, old) == []


def test_every_validation_explains_itself_on_one_line(policy: dict[str, Any]) -> None:
    validations = policy["spec"]["validations"]

    assert len(validations) == 2
    for validation in validations:
        assert validation["message"], validation
        assert "\n" not in validation["message"], "the API server rejects messages with line breaks"
        assert validation["reason"] == "Forbidden"


def test_the_policy_checks_every_create_and_update_of_an_approval(policy: dict[str, Any]) -> None:
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["shepherd.dev"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["releaseapprovals"],
        }
    ]


def test_the_binding_enforces_the_policy_everywhere(chart: helm.Chart) -> None:
    objects = render(chart)
    binding = objects["ValidatingAdmissionPolicyBinding"]

    assert binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"] == {
        "policyName": objects["ValidatingAdmissionPolicy"]["metadata"]["name"],
        "validationActions": ["Deny"],
    }


def test_the_policy_can_be_left_out(chart: helm.Chart) -> None:
    objects = render(chart, {"approvalPolicy": {"enabled": False}})

    assert "ValidatingAdmissionPolicy" not in objects
    assert "ValidatingAdmissionPolicyBinding" not in objects
    assert "Deployment" in objects
