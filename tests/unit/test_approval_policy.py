"""The chart's admission policies for ReleaseApprovals (who approves, for which role, never the spec's author)
and for Releases (who last changed the spec): rendered by Helm's SDK, their CEL evaluated by cel-python
against the admission requests the API server would send. The JSON patches themselves are applied by the
real API server in tests/controlplane/test_sign_off_by_role_under_the_real_admission_policy.py."""

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

from shepherd.commands import approval_manifest

CHART = Path(__file__).resolve().parents[2] / "charts" / "shepherd"
ALICE = "alice@example.com"
MALLORY = "mallory@example.com"


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The rendered objects by kind and name, e.g. "ValidatingAdmissionPolicy/shepherd-approvals"."""
    manifests = chart.render(values, name="shepherd", namespace="shepherd-system")
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc
        for text in manifests.values()
        for doc in yaml.safe_load_all(text)
        if doc
    }


def kinds(objects: dict[str, dict[str, Any]]) -> set[str]:
    return {key.split("/")[0] for key in objects}


@pytest.fixture(scope="module")
def policy(chart: helm.Chart) -> dict[str, Any]:
    return render(chart)["ValidatingAdmissionPolicy/shepherd-approvals"]


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


def admission(
    operation: str,
    user: str,
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    groups: tuple[str, ...] = (),
    params: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The CEL activation of one admission request, with the policy's variables bound as the API server
    binds them (each evaluated once, in order)."""
    request = {
        "operation": operation,
        "userInfo": {"username": user, "groups": [*groups, "system:authenticated"]},
        "namespace": obj["metadata"]["namespace"],
        "name": obj["metadata"]["name"],
    }
    # oldObject is null on CREATE, as the API server binds it.
    activation = {"object": json_to_cel(obj), "oldObject": json_to_cel(old), "request": json_to_cel(request)}
    if params is not None:
        activation["params"] = json_to_cel(params)
    variables = activation["variables"] = celtypes.MapType()
    for variable in (policy or {}).get("spec", {}).get("variables", []):
        variables[celtypes.StringType(variable["name"])] = evaluate(variable["expression"], activation)
    return activation


def denials(
    policy: dict[str, Any],
    operation: str,
    user: str,
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    groups: tuple[str, ...] = (),
    params: dict[str, Any] | None = None,
) -> list[str]:
    """The messages the API server denies the request with; empty when the policy admits it."""
    activation = admission(operation, user, obj, old, groups, params, policy)
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

    assert len(validations) == 3
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
    binding = objects["ValidatingAdmissionPolicyBinding/shepherd-approvals"]

    assert binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"] == {"policyName": "shepherd-approvals", "validationActions": ["Deny"]}


def test_the_policies_can_be_left_out(chart: helm.Chart) -> None:
    objects = render(chart, {"approvalPolicy": {"enabled": False}})

    assert not {k for k in kinds(objects) if "AdmissionPolicy" in k}
    assert "Deployment" in kinds(objects)


def test_four_eyes_can_be_left_out_for_clusters_before_kubernetes_1_36(chart: helm.Chart) -> None:
    objects = render(chart, {"approvalPolicy": {"fourEyes": False}})

    assert sorted(k for k in objects if "AdmissionPolicy" in k) == [
        "ValidatingAdmissionPolicy/shepherd-approvals",
        "ValidatingAdmissionPolicyBinding/shepherd-approvals",
    ]


# --- sign-off by role -------------------------------------------------------------------------------------


def sign_off(approver: str, group: str) -> dict[str, Any]:
    signed = approval(approver)
    signed["spec"]["group"] = group
    return signed


def test_a_sign_off_for_a_group_of_the_signer_is_admitted(policy: dict[str, Any]) -> None:
    assert denials(policy, "CREATE", ALICE, sign_off(ALICE, "qa"), groups=("qa",)) == []
    assert denials(policy, "CREATE", ALICE, sign_off(ALICE, "sre"), groups=("qa", "sre")) == []


def test_a_sign_off_for_a_group_the_signer_is_not_in_is_denied_naming_both(policy: dict[str, Any]) -> None:
    expected = [
        f'spec.group must be a group of the user creating the approval ("{ALICE}" is not in group "qa")'
    ]
    assert denials(policy, "CREATE", ALICE, sign_off(ALICE, "qa"), groups=("sre",)) == expected
    assert denials(policy, "CREATE", ALICE, sign_off(ALICE, "qa")) == expected


def test_kubectl_release_approve_with_a_group_is_admitted_for_a_member_only(policy: dict[str, Any]) -> None:
    created = approval_manifest("prod", "shop", 3, ALICE, "", "uid-of-shop", "qa")

    assert denials(policy, "CREATE", ALICE, created, groups=("qa",)) == []
    assert denials(policy, "CREATE", ALICE, created, groups=("dev",)) != []


# --- four eyes --------------------------------------------------------------------------------------------

AUTHOR = "shepherd.dev/spec-author"


@pytest.fixture(scope="module")
def four_eyes(chart: helm.Chart) -> dict[str, Any]:
    return render(chart)["ValidatingAdmissionPolicy/shepherd-four-eyes"]


@pytest.fixture(scope="module")
def spec_author(chart: helm.Chart) -> dict[str, Any]:
    return render(chart)["MutatingAdmissionPolicy/shepherd-spec-author"]


def release(name: str, author: str | None, version: str = "1.0.0") -> dict[str, Any]:
    annotations = {AUTHOR: author} if author is not None else {}
    metadata: dict[str, Any] = {"name": name, "namespace": "prod"}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "Release",
        "metadata": metadata,
        "spec": {"version": version},
    }


def test_the_author_of_a_releases_spec_cannot_sign_it_off(four_eyes: dict[str, Any]) -> None:
    # The API server evaluates the policy against each Release of the namespace (the binding's params).
    assert denials(four_eyes, "CREATE", ALICE, approval(ALICE), params=release("shop", ALICE)) == [
        f'"{ALICE}" last changed the spec of release shop (annotation shepherd.dev/spec-author), '
        "so cannot sign off its revisions: four eyes"
    ]
    assert denials(four_eyes, "CREATE", ALICE, sign_off(ALICE, "qa"), params=release("shop", ALICE)) != []


@pytest.mark.parametrize(
    "param",
    [release("shop", MALLORY), release("billing", ALICE), release("shop", None)],
    ids=["another-author", "another-release", "no-author-recorded"],
)
def test_anyone_else_may_sign_off(four_eyes: dict[str, Any], param: dict[str, Any]) -> None:
    assert denials(four_eyes, "CREATE", ALICE, approval(ALICE), params=param) == []


def test_the_four_eyes_binding_takes_every_release_of_the_namespace(chart: helm.Chart) -> None:
    objects = render(chart)
    policy = objects["ValidatingAdmissionPolicy/shepherd-four-eyes"]["spec"]
    binding = objects["ValidatingAdmissionPolicyBinding/shepherd-four-eyes"]["spec"]

    assert policy["paramKind"] == {"apiVersion": "shepherd.dev/v1alpha1", "kind": "Release"}
    assert policy["failurePolicy"] == "Fail"
    assert [r["operations"] for r in policy["matchConstraints"]["resourceRules"]] == [["CREATE"]]
    # No Release to compare with is no author to refuse; it must not skip the approvals policy's own checks.
    assert binding == {
        "policyName": "shepherd-four-eyes",
        "validationActions": ["Deny"],
        "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
    }


def recorded_author(policy: dict[str, Any], operation: str, user: str, new: dict[str, Any], old: Any) -> str:
    return str(admission(operation, user, new, old, policy=policy)["variables"]["author"])


def test_the_author_is_whoever_creates_a_release_or_changes_its_spec(spec_author: dict[str, Any]) -> None:
    assert recorded_author(spec_author, "CREATE", ALICE, release("shop", MALLORY), None) == ALICE
    changed = release("shop", MALLORY, version="1.1.0")
    assert recorded_author(spec_author, "UPDATE", ALICE, changed, release("shop", MALLORY)) == ALICE


def test_any_other_write_keeps_the_recorded_author_whatever_it_says(spec_author: dict[str, Any]) -> None:
    forged = release("shop", "carol")
    gitops = "system:serviceaccount:argocd:argocd-application-controller"
    assert recorded_author(spec_author, "UPDATE", gitops, forged, release("shop", ALICE)) == ALICE
    assert recorded_author(spec_author, "UPDATE", gitops, forged, release("shop", None)) == ""


def test_the_spec_author_policy_watches_releases_not_their_status(spec_author: dict[str, Any]) -> None:
    spec = spec_author["spec"]
    assert spec["failurePolicy"] == "Fail" and spec["reinvocationPolicy"] == "Never"
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["shepherd.dev"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["releases"],
        }
    ]
    assert [m["patchType"] for m in spec["mutations"]] == ["JSONPatch"]
