"""Story: two people approve a gated revision with `kubectl release approve`, each as who the cluster says
they are (their own kubeconfig context), and the Release goes on once both have."""

from __future__ import annotations

import json
import time

import pytest
from cluster import DEFAULT_TIMEOUT, Cluster, quickstart_release

from shepherd.lab.localapi import LocalAPIThread, LocalKubernetes, api_error

USERS = {"token-alice": "alice", "token-bob": "bob"}
TWO_APPROVALS = [{"name": "two-approvals", "approval": {"count": 2}}]

pytestmark = pytest.mark.local_api(users=USERS)


def approvals(cluster: Cluster) -> list[dict[str, object]]:
    listed = json.loads(cluster.kubectl("get", "releaseapprovals", "-o", "json").stdout)["items"]
    return [{"name": a["metadata"]["name"]} | a["spec"] for a in listed]


def gated_at_revision_2(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", gates=TWO_APPROVALS))
    cluster.wait_phase("Gating", revision=2)


def test_alice_and_bob_approve_and_the_release_goes_on(cluster: Cluster, local_api: LocalAPIThread) -> None:
    gated_at_revision_2(cluster)
    whoami = ("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert cluster.kubectl(*whoami, "--context", "alice").stdout == "alice"

    approved = cluster.kubectl(
        "release", "--context", "alice", "approve", "shop", "--comment", "dashboards ok"
    )
    assert approved.stdout == (
        "releaseapproval.shepherd.dev/shop-r2-alice created: alice approves revision 2 of release shop\n"
    )
    cluster.wait_status(
        "alice's approval", lambda s: "1/2 approvals of revision 2: alice" in s["gates"][0]["message"]
    )

    again = cluster.kubectl("release", "--context", "alice", "approve", "shop")
    assert "shop-r2-alice unchanged: alice already approved revision 2 of release shop at 20" in again.stdout
    assert approvals(cluster) == [
        {
            "name": "shop-r2-alice",
            "release": "shop",
            "revision": 2,
            "approver": "alice",
            "comment": "dashboards ok",
        }
    ]
    assert (
        "1/2 approvals" in cluster.status()["gates"][0]["message"] and cluster.status()["phase"] == "Gating"
    )

    stale = cluster.kubectl("release", "--context", "bob", "approve", "shop", "--revision", "1", check=False)
    assert stale.returncode != 0
    assert "release shop is at revision 2, not 1" in stale.stderr
    kubeconfig = str(local_api.kubeconfig_path)
    bob = ("release", "--kubeconfig", kubeconfig, "--context", "bob", "-n", "default", "approve", "shop")
    assert "created: bob approves revision 2" in cluster.kubectl(*bob, "--revision", "2").stdout

    status = cluster.wait_phase("Succeeded", revision=2)
    audit = next(h for h in status["history"] if h["revision"] == 2)["gates"][0]
    assert [a["approver"] for a in audit["approvers"]] == ["alice", "bob"]


def test_approving_a_revision_past_its_gates_warns(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)

    late = cluster.kubectl("release", "approve", "shop")
    assert "warning: revision 1 of release shop is past its gates (Succeeded)" in late.stderr
    assert "shop-r1-kubernetes-admin created: kubernetes-admin approves revision 1" in late.stdout


def test_approving_a_missing_release_is_a_clear_error(cluster: Cluster) -> None:
    result = cluster.kubectl("release", "--context", "alice", "approve", "nope", check=False)

    assert result.returncode != 0
    assert 'release "nope" not found in namespace "default"' in result.stderr
    assert approvals(cluster) == []


def test_a_cluster_without_self_subject_review_is_named(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    gated_at_revision_2(cluster)

    def older_than_1_28(self: LocalKubernetes, headers: object) -> None:
        raise api_error(404, "NotFound", "the server could not find the requested resource")

    # A cluster older than Kubernetes 1.28 serves no authentication.k8s.io/v1 SelfSubjectReview.
    monkeypatch.setattr(LocalKubernetes, "_self_subject_review", older_than_1_28)
    result = cluster.kubectl("release", "--context", "alice", "approve", "shop", check=False)

    assert result.returncode != 0
    assert (
        "does not serve SelfSubjectReview (authentication.k8s.io/v1, Kubernetes 1.28 or later)"
        in result.stderr
    )
    assert approvals(cluster) == []


def test_an_approval_is_owned_by_its_release_and_deleted_with_it(cluster: Cluster) -> None:
    gated_at_revision_2(cluster)
    cluster.kubectl("release", "--context", "alice", "approve", "shop")
    approval = json.loads(cluster.kubectl("get", "releaseapproval", "shop-r2-alice", "-o", "json").stdout)
    (owner,) = approval["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Release",
        "shop",
        cluster.release()["metadata"]["uid"],
    )

    cluster.kubectl("delete", "release", "shop", "--wait=true", "--timeout=30s")
    deadline = time.monotonic() + DEFAULT_TIMEOUT
    while approvals(cluster):
        assert time.monotonic() < deadline, "the approval outlived its Release"
        time.sleep(0.05)
