"""Story: a revision needs sign-off by qa and by sre. The people are real identities: client certificates
whose O names their groups (alice in qa, bob and dave in sre, carol in none). The chart's admission policies
on the real API server admit a sign-off only from a member of the group it signs for, record who last
changed the Release's spec, and refuse that person's sign-off (four eyes); the operator counts the rest."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from shepherd.core.gates import SPEC_AUTHOR
from shepherd.lab.controlplane import ADMIN, ControlPlane
from story import Kubectl, Story, grant, kubectl_runner, quickstart_release

GROUPS = {"alice": ["qa"], "bob": ["sre"], "dave": ["sre"], "carol": []}
SIGN_OFF: dict[str, Any] = {
    "name": "sign-off",
    "description": "QA has run the regression suite; SRE has checked capacity",
    "approval": {"from": [{"group": "qa"}, {"group": "sre"}]},
}


@pytest.fixture
def people(
    control_plane: ControlPlane, story: Story, admin: kubernetes.client.ApiClient, tmp_path: Path
) -> Kubectl:
    """kubectl with a context per person (`--context alice`), each allowed what a release manager is given:
    read and change Releases, create ReleaseApprovals, in the story's namespace only."""
    rules = [
        {
            "apiGroups": ["shepherd.dev"],
            "resources": ["releases"],
            "verbs": ["get", "list", "watch", "patch"],
        },
        {
            "apiGroups": ["shepherd.dev"],
            "resources": ["releaseapprovals"],
            "verbs": ["get", "list", "create"],
        },
    ]
    grant(admin, story.namespace, "release-managers", rules, GROUPS)
    kubeconfig = control_plane.users_kubeconfig(GROUPS, tmp_path / "people.kubeconfig")
    return kubectl_runner(kubeconfig, story.namespace, tmp_path / "people-cache")


def approve(people: Kubectl, user: str, group: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return people("release", "--context", user, "approve", "shop", "--group", group, check=check)


def sign_off_item(story: Story, group: str) -> Mapping[str, Any]:
    return next(i for i in story.status().get("checklist") or [] if i.get("group") == group)


def item_state(status: Mapping[str, Any], group: str) -> str | None:
    return next((i.get("state") for i in status.get("checklist") or [] if i.get("group") == group), None)


def author(story: Story) -> str | None:
    annotations: Mapping[str, str] = story.release()["metadata"].get("annotations") or {}
    return annotations.get(SPEC_AUTHOR)


def test_the_pinned_control_plane_serves_mutating_admission_policies_v1(control_plane: ControlPlane) -> None:
    listed = control_plane.request("GET", "/apis/admissionregistration.k8s.io/v1")
    names = {resource["name"] for resource in listed["resources"]}
    assert {"mutatingadmissionpolicies", "mutatingadmissionpolicybindings"} <= names, names


def test_a_revision_that_needs_qa_and_sre_starts_only_after_both_signed_as_members(
    story: Story, people: Kubectl
) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    story.apply(quickstart_release("1.1.0", gates=[SIGN_OFF]))
    story.wait_phase("Gating", revision=2)
    assert author(story) == ADMIN, "the API server recorded who changed the spec"

    refused = approve(people, "carol", "qa", check=False)
    assert refused.returncode != 0
    assert '("carol" is not in group "qa")' in refused.stderr
    assert "ValidatingAdmissionPolicy" in refused.stderr
    refused = approve(people, "bob", "qa", check=False)
    assert refused.returncode != 0 and '("bob" is not in group "qa")' in refused.stderr, refused.stderr

    signed = approve(people, "alice", "qa")
    assert "alice approves revision 2 of release shop for qa" in signed.stdout
    story.wait("the qa sign-off in the checklist", lambda s: item_state(s, "qa") == "Passed")
    status = story.status()
    assert status["phase"] == "Gating" and item_state(status, "sre") == "Pending", "sre has not signed yet"

    approve(people, "bob", "sre")
    story.wait_phase("Succeeded", revision=2)
    qa, sre = sign_off_item(story, "qa"), sign_off_item(story, "sre")
    assert [(s["user"], s["group"]) for s in qa["signedBy"]] == [("alice", "qa")]
    assert [(s["user"], s["group"]) for s in sre["signedBy"]] == [("bob", "sre")]
    assert qa["passedAt"] <= sre["passedAt"], "qa passed first"
    assert qa["owner"] == "qa" and qa["description"] == SIGN_OFF["description"]

    shown = people("release", "--context", "carol", "checklist", "shop").stdout
    assert "checklist of release shop, revision 2 (1.1.0): 2/2 passed" in shown
    listed = json.loads(people("release", "--context", "carol", "checklist", "shop", "-o", "json").stdout)
    assert [(i["name"], i["group"], i["state"]) for i in listed["items"]] == [
        ("sign-off", "qa", "Passed"),
        ("sign-off", "sre", "Passed"),
    ]


def test_the_author_of_a_spec_change_cannot_sign_off_its_revision(story: Story, people: Kubectl) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    story.apply(quickstart_release("1.1.0", gates=[SIGN_OFF]))
    story.wait_phase("Gating", revision=2)
    approve(people, "bob", "sre")  # bob signs while someone else wrote the spec: admitted
    story.wait("bob's sre sign-off", lambda s: item_state(s, "sre") == "Passed")

    # bob changes the spec (the gate's description: the same revision) and becomes its author.
    gate = {**SIGN_OFF, "description": "SRE wrote this"}
    people(
        "--context",
        "bob",
        "patch",
        "release",
        "shop",
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"gates": [gate]}}),
    )
    assert author(story) == "bob"
    assert story.status()["revision"] == 2

    # The operator no longer counts the sign-off bob gave before (defence in depth), and says why.
    story.wait("bob's sign-off set aside", lambda s: item_state(s, "sre") == "Pending")
    assert (
        "bob's sign-off does not count: bob last changed the spec (four eyes)"
        in sign_off_item(story, "sre")["message"]
    )
    # The API server refuses a new one from him.
    again = {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleaseApproval",
        "metadata": {"generateName": "shop-"},
        "spec": {"release": "shop", "revision": 2, "approver": "bob", "group": "sre"},
    }
    refused = people("create", "--context", "bob", "-f", "-", input=yaml.safe_dump(again), check=False)
    assert refused.returncode != 0
    assert '"bob" last changed the spec of release shop' in refused.stderr, refused.stderr
    assert "shepherd-four-eyes" in refused.stderr
    # Nor can anyone hand the authorship to someone else without changing the spec.
    people("--context", "alice", "annotate", "release", "shop", "--overwrite", f"{SPEC_AUTHOR}=carol")
    assert author(story) == "bob"

    approve(people, "alice", "qa")
    status = story.wait("alice's qa sign-off", lambda s: item_state(s, "qa") == "Passed")
    assert status["phase"] == "Gating" and item_state(status, "sre") == "Pending", "no sre sign-off but bob's"
    approve(people, "dave", "sre")
    story.wait_phase("Succeeded", revision=2)
    sre = sign_off_item(story, "sre")
    assert [s["user"] for s in sre["signedBy"]] == ["dave"]
