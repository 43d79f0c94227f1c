"""Stories of gates: approvals with identity, release windows, and a dependency on another Release."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import yaml
from cluster import Cluster, quickstart_release

from shepherd.handlers import Runtime
from shepherd.kube import KubeAPI, load_configuration
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread
from shepherd.runner import OperatorOptions, OperatorThread

TWO_APPROVALS = [{"name": "two-approvals", "approval": {"count": 2}}]
OFFICE_HOURS = [
    {
        "name": "office-hours",
        "window": {
            "days": ["Mon", "Tue", "Wed", "Thu"],
            "start": "09:00",
            "end": "16:00",
            "timeZone": "Europe/Berlin",
        },
    }
]


def approval(name: str, revision: int, approver: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "shepherd.dev/v1alpha1",
            "kind": "ReleaseApproval",
            "metadata": {"name": name},
            "spec": {"release": "shop", "revision": revision, "approver": approver, "comment": "looks good"},
        }
    )


def test_a_release_waits_for_two_approvals_of_its_revision(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.kubectl("apply", "-f", "-", input=approval("bob-for-1", 1, "bob"))
    cluster.apply(quickstart_release("1.1.0", gates=TWO_APPROVALS))
    status = cluster.wait_phase("Gating", revision=2)
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}, "no traffic moves before the gates pass"
    gate = cluster.wait_status("the gate's status", lambda s: bool(s.get("gates")))["gates"][0]
    assert gate["state"] == "Pending" and "0/2 approvals of revision 2" in gate["message"], status

    cluster.kubectl("apply", "-f", "-", input=approval("alice-for-2", 2, "alice"))
    cluster.wait_status("one approval", lambda s: "1/2 approvals" in s["gates"][0]["message"])
    assert cluster.status()["phase"] == "Gating"
    cluster.kubectl("apply", "-f", "-", input=approval("bob-for-2", 2, "bob"))
    status = cluster.wait_phase("Succeeded", revision=2)
    audit = next(h for h in status["history"] if h["revision"] == 2)["gates"][0]
    assert [a["approver"] for a in audit["approvers"]] == ["alice", "bob"]
    reasons = {e["reason"] for e in cluster.events()}
    assert {"GatePending", "GatePassed", "Gating"} <= reasons


class Clock:
    """The operator's clock, moved by the test: it runs at real speed from the moment the test sets."""

    def __init__(self, moment: datetime) -> None:
        self.set(moment)

    def set(self, moment: datetime) -> None:
        self.offset = moment - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clocked(
    local_api: LocalAPIThread, kubectl: object, kubelet: KubeletSimulator
) -> Iterator[tuple[Cluster, Clock, OperatorThread]]:
    clock = Clock(datetime(2026, 11, 7, 12, 0, tzinfo=UTC))  # a Saturday
    configuration = load_configuration(str(local_api.kubeconfig_path))
    api = KubeAPI(configuration)
    runtime = Runtime(api=KubeAPI(configuration), resync_seconds=300, clock=clock)
    options = OperatorOptions(standalone=True, resync_seconds=300)
    with OperatorThread(configuration, options, runtime=runtime) as operator:
        yield Cluster(kubectl, api), clock, operator  # type: ignore[arg-type]
    api.close()


def test_a_closed_window_holds_the_release_and_an_open_one_lets_it_go(
    clocked: tuple[Cluster, Clock, OperatorThread],
) -> None:
    cluster, clock, operator = clocked
    cluster.apply(quickstart_release("1.0.0", gates=OFFICE_HOURS))
    status = cluster.wait_phase("Gating", revision=1)
    gate = cluster.wait_status("the window's status", lambda s: bool(s.get("gates")))["gates"][0]
    assert "outside the window Mon,Tue,Wed,Thu 09:00-16:00 Europe/Berlin" in gate["message"], status
    assert "opens at 2026-11-09T08:00:00Z" in gate["message"]
    assert cluster.deployments() == {}

    clock.set(datetime(2026, 11, 9, 8, 0, tzinfo=UTC))  # Monday 09:00 in Berlin
    cluster.reconciled_after(operator, lambda: cluster.kubectl("annotate", "release", "shop", "tick=1"))
    cluster.wait_phase("Succeeded", revision=1)


def test_a_release_waits_for_the_release_it_depends_on(cluster: Cluster) -> None:
    after_backend = [{"name": "after-backend", "release": {"name": "backend"}}]
    cluster.apply(quickstart_release("1.0.0", gates=after_backend))
    gate = cluster.wait_status("the dependency gate", lambda s: bool(s.get("gates")))["gates"][0]
    assert "release default/backend not found" in gate["message"]
    backend = quickstart_release("3.0.0")
    backend["metadata"]["name"] = "backend"
    cluster.apply(backend)
    cluster.wait_phase("Succeeded", name="backend")
    status = cluster.wait_phase("Succeeded", revision=1)
    assert status["gates"][0]["state"] == "Passed"
