"""Story: alice approves a gated revision with `kubectl release approve`, as the user the API server says
she is; bob's approval forged in alice's name is refused by the chart's ValidatingAdmissionPolicy."""

from __future__ import annotations

import json

import kubernetes
import yaml

from story import Story, grant, quickstart_release

ONE_APPROVAL = [{"name": "sign-off", "approval": {"count": 1}}]


def grant_approvers(story: Story, admin: kubernetes.client.ApiClient) -> None:
    """What a cluster admin gives release managers: read Releases, create ReleaseApprovals."""
    rules = [
        {"apiGroups": ["shepherd.dev"], "resources": ["releases"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["shepherd.dev"],
            "resources": ["releaseapprovals"],
            "verbs": ["get", "list", "create"],
        },
    ]
    grant(admin, story.namespace, "approver", rules, ("alice", "bob"))


def test_alice_approves_and_bob_cannot_forge_her_approval(
    story: Story, admin: kubernetes.client.ApiClient
) -> None:
    grant_approvers(story, admin)
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    story.apply(quickstart_release("1.1.0", gates=ONE_APPROVAL))
    story.wait_phase("Gating", revision=2)

    forged = {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleaseApproval",
        "metadata": {"name": "forged"},
        "spec": {"release": "shop", "revision": 2, "approver": "alice", "comment": "not really alice"},
    }
    refused = story.kubectl(
        "create", "--context", "bob", "-f", "-", input=yaml.safe_dump(forged), check=False
    )
    assert refused.returncode != 0
    assert 'spec.approver is "alice", the request comes from "bob"' in refused.stderr
    assert "ValidatingAdmissionPolicy" in refused.stderr
    assert story.status()["phase"] == "Gating", "a refused approval counts for nothing"

    approved = story.kubectl("release", "--context", "alice", "approve", "shop", "--comment", "dashboards ok")
    assert "alice" in approved.stdout
    story.wait_phase("Succeeded", revision=2)
    listed = json.loads(story.kubectl("get", "releaseapprovals", "-o", "json").stdout)["items"]
    assert [(a["spec"]["approver"], a["spec"]["revision"]) for a in listed] == [("alice", 2)]
    gate = next(g for g in story.status()["gates"] if g["name"] == "sign-off")
    assert gate["state"] == "Passed"
