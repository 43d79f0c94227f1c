"""Story: the chart with `sharding.shards: 2` on the real API server. Two `shepherd run` processes, shards 0
and 1, each with the chart's arguments for its shard, act at once on disjoint Releases, each on its own
Lease. Shard 1's leader is killed: its Releases stop while shard 0's still roll out, until a standby of shard
1 takes that shard's Lease once it expires and carries them on.

The control plane here keeps an audit log, and each process has a ServiceAccount of its own, bound to the
chart's roles (the rights the chart's own ServiceAccount has), so the API server itself says which process
wrote what.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from shepherd.lab.cluster import InstalledChart, OperatorProcess, install_chart
from shepherd.lab.controlplane import ControlPlane, binaries_problem
from shepherd.lab.podsim import PodSimulator
from shepherd.sharding import Shard
from story import Story, kubectl_runner, quickstart_release

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = REPO / ".cluster" / "bin"
CHART = REPO / "charts" / "shepherd"
NAMESPACE = "sharded"
SHARDS = 2
CANDIDATES = ("apple", "berry", "cherry", "damson", "elder", "fig", "grape", "hazel", "kiwi", "lemon", "lime")
# Three Releases of each shard; no dashes in their names, so a child's name (<release>-<component>,
# <release>-<revision>, <release>.<event>) tells its Release.
OWNED = {
    index: [name for name in CANDIDATES if Shard(index, SHARDS).owns(NAMESPACE, name)][:3]
    for index in range(SHARDS)
}
# Short, so that a standby takes a dead leader's Lease in seconds.
TIMING = {"leaseDuration": "4s", "renewDeadline": "3s", "retryPeriod": "1s"}
WRITES = {"create", "update", "patch", "delete"}
PROCESSES = ("shard-0", "shard-1", "shard-1-standby")


@dataclasses.dataclass(frozen=True)
class Write:
    """One write, as the API server's audit log has it."""

    who: str  # the process's ServiceAccount
    release: str  # the Release it concerns
    verb: str
    resource: str  # with its subresource: releases, releases/status, deployments, events, ...
    at: float  # Unix time the API server received it


@dataclasses.dataclass
class Sharded:
    plane: ControlPlane
    chart: InstalledChart
    admin: kubernetes.client.ApiClient
    workdir: Path

    def lease_holder(self, index: int) -> str:
        """The identity (without its random suffix) holding shard `index`'s Lease; "" for none yet."""
        name = Shard(index, SHARDS).lease_name(self.chart.name)
        try:
            lease = kubernetes.client.CoordinationV1Api(self.admin).read_namespaced_lease(
                name, self.chart.namespace
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return ""
            raise
        return str(lease.spec.holder_identity or "").rsplit("_", 1)[0]

    def operator(self, index: int, identity: str) -> OperatorProcess:
        """`shepherd run` with the arguments of shard `index`'s Deployment, as ServiceAccount `identity`."""
        self._service_account(identity)
        name = f"{self.chart.name}-shard-{index}"
        deployment = next(
            d for d in self.chart.manifests if d["kind"] == "Deployment" and d["metadata"]["name"] == name
        )
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        chart = dataclasses.replace(self.chart, args=tuple(container["args"]), service_account=identity)
        return OperatorProcess(self.plane, chart, self.workdir / identity, identity=identity)

    def _service_account(self, name: str) -> None:
        """A ServiceAccount bound to the chart's ClusterRole and leader-election Role."""
        namespace, chart = self.chart.namespace, self.chart.name
        subjects = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
        kubernetes.client.CoreV1Api(self.admin).create_namespaced_service_account(
            namespace, {"metadata": {"name": name}}
        )
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.admin)
        group = "rbac.authorization.k8s.io"
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": f"{chart}-{name}"},
                "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": chart},
                "subjects": subjects,
            }
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": f"{chart}-{name}-leader-election"},
                "roleRef": {"apiGroup": group, "kind": "Role", "name": f"{chart}-leader-election"},
                "subjects": subjects,
            },
        )

    def writes(self) -> list[Write]:
        """Every write of the processes in the story's namespace, by the audit log."""
        found = []
        for who in PROCESSES:
            for event in self.plane.audited_requests(f"system:serviceaccount:{self.chart.namespace}:{who}"):
                ref = event.get("objectRef") or {}
                if event["verb"] not in WRITES or ref.get("namespace") != NAMESPACE or not ref.get("name"):
                    continue
                resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
                stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
                release = ref["name"].split(".")[0].split("-")[0]
                found.append(Write(who, release, event["verb"], resource, stamp.timestamp()))
        return found


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sharded]:
    """A control plane of its own that keeps an audit log, and the chart installed with two shards."""
    problem = binaries_problem(BIN_DIR)
    if problem is not None:
        pytest.fail(f"the real control plane cannot start: {problem}", pytrace=False)
    workdir = tmp_path_factory.mktemp("sharded")
    values = {"sharding": {"shards": SHARDS}, "leaderElection": TIMING}
    with (
        ControlPlane(BIN_DIR, workdir / "controlplane", audit=True) as plane,
        PodSimulator(plane.kubeconfig),
        kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig)) as admin,
    ):
        chart = install_chart(plane, CHART, values=values)
        kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": NAMESPACE}})
        yield Sharded(plane, chart, admin, workdir)


def release(name: str, version: str) -> dict[str, Any]:
    """The quickstart's Release, small: one component of two pods, a canary of one step."""
    manifest = quickstart_release(version, strategy={"canary": {"steps": [{"setWeight": 50}]}})
    manifest["metadata"]["name"] = name
    manifest["spec"]["components"] = [{**manifest["spec"]["components"][0], "replicas": 2}]
    return manifest


def test_two_shards_act_at_once_on_their_own_releases_and_a_standby_takes_over_a_dead_one(
    sharded: Sharded, tmp_path: Path
) -> None:
    assert [len(names) for names in OWNED.values()] == [3, 3]
    everyone = OWNED[0] + OWNED[1]
    kubectl = kubectl_runner(sharded.plane.kubeconfig, NAMESPACE, tmp_path / "kube-cache")
    first, second = sharded.operator(0, "shard-0"), sharded.operator(1, "shard-1")
    standby = sharded.operator(1, "shard-1-standby")
    story = Story(sharded.admin, NAMESPACE, kubectl, first)
    try:
        first.start()
        second.start()
        story.wait_until(
            "each shard's leader on its own Lease",
            lambda: (sharded.lease_holder(0), sharded.lease_holder(1)) == ("shard-0", "shard-1"),
        )
        for name in everyone:
            story.apply(release(name, "1.0.0"))
        for name in everyone:
            story.wait_phase("Succeeded", revision=1, name=name)
        settled = time.time()

        second.kill()
        killed = time.time()
        for name in everyone:
            story.apply(release(name, "1.1.0"))
        for name in OWNED[0]:
            story.wait_phase("Succeeded", revision=2, name=name)
        revisions = {name: story.status(name).get("revision") for name in OWNED[1]}
        assert revisions == dict.fromkeys(OWNED[1], 1), (
            "nobody acts on shard 1's Releases: its leader is dead"
        )

        standby.start()
        story.wait_until(
            "the standby to see the dead leader's Lease", lambda: "standing by" in standby.output()
        )
        story.wait_until(
            "the standby to take shard 1's Lease once it expired",
            lambda: sharded.lease_holder(1) == "shard-1-standby",
        )
        for name in OWNED[1]:
            story.wait_phase("Succeeded", revision=2, name=name)
        assert sharded.lease_holder(0) == "shard-0"
    except AssertionError as error:
        logs = (
            f"--- {p.identity}\n" + "\n".join(p.output().splitlines()[-30:]) for p in (first, second, standby)
        )
        raise AssertionError("\n".join([str(error), *logs])) from error
    finally:  # the audit log has every request already; a graceful stop waits out the loops' cancellation
        for process in (first, second, standby):
            process.kill()

    writes = sharded.writes()
    owner = {name: f"shard-{index}" for index, names in OWNED.items() for name in names}
    assert {w.release for w in writes} >= set(everyone)
    for name in OWNED[0]:
        assert {w.who for w in writes if w.release == name and w.resource != "releases"} == {"shard-0"}
    for name in OWNED[1]:
        acted = [w for w in writes if w.release == name and w.resource != "releases"]
        assert {w.who for w in acted if w.at < killed} == {"shard-1"}
        assert {w.who for w in acted if w.at >= killed} == {"shard-1-standby"}
    # Nor does a shard write to another shard's Release itself: no finalizer is needed, so none is put there.
    foreign = [
        w for w in writes if w.resource == "releases" and w.who.removesuffix("-standby") != owner[w.release]
    ]
    assert not foreign, [(w.who, w.release, w.verb, f"{w.at - settled:+.1f}s") for w in foreign[:4]]
