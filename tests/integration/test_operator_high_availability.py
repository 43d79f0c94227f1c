"""Story: two operator replicas run against one API; only the holder of the leader Lease ever acts.

Each replica talks to the API with its own token, so the local API's request log tells who made each call.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import kmock
import pytest
from cluster import Cluster, quickstart_release

from helpers import free_port, request_json, wait_until
from shepherd.core.leadership import LeaseTiming
from shepherd.kube import KubeAPI, NotLeading, ReleaseKey, load_configuration
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread, install_crds, write_kubeconfig
from shepherd.lab.processes import spawn
from shepherd.leader import LeaderElection, LeadershipLost
from shepherd.runner import OperatorOptions, OperatorThread

# Short, so that the stories take seconds; the rules are the same as with the defaults (15s, 10s, 2s).
TIMING = LeaseTiming(lease_duration=3, renew_deadline=2, retry_period=0.25)
LEASE_NAMESPACE = "default"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/shepherd"
SHOP = ReleaseKey("default", "shop")
CRDS = Path(__file__).resolve().parents[2] / "crds"
# Calls on the Lease itself: electing a leader is not acting on Releases.
LEASE_CALLS = {("GET", "leases"), ("POST", "leases"), ("PUT", "leases")}


def kubeconfig_for(local_api: LocalAPIThread, who: str, directory: Path) -> Path:
    """A kubeconfig with a context named `who`, which sends the token `token-{who}`."""
    return write_kubeconfig(directory / f"kubeconfig-{who}", local_api.url, users={f"token-{who}": who})


def requests_of(local_api: LocalAPIThread, who: str, since: int = 0) -> list[kmock.Request]:
    """The requests of one replica (kubectl and the kubelet send no token), from the `since`-th request on."""
    token = f"Bearer token-{who}"
    return [r for r in list(local_api.emulator)[since:] if r.headers.get("Authorization") == token]


def calls(requests: list[kmock.Request]) -> set[tuple[str, str]]:
    """(method, resource[/subresource]) of resource requests."""
    return {
        (str(r.method.value), r.resource.plural + (f"/{r.subresource}" if r.subresource else ""))
        for r in requests
        if r.resource is not None and r.resource.plural  # not discovery
    }


def holder(local_api: LocalAPIThread) -> str | None:
    code, lease = request_json("GET", local_api.url + LEASE)
    return lease["spec"].get("holderIdentity") if code == 200 else None


class Replicas:
    """Operator replicas in threads, each with its own identity, token and readiness endpoint."""

    def __init__(self, local_api: LocalAPIThread, directory: Path, stack: ExitStack) -> None:
        self.local_api, self.directory, self.stack = local_api, directory, stack
        self.ready_urls: dict[str, str] = {}

    def start(self, who: str) -> OperatorThread:
        self.ready_urls[who] = f"http://127.0.0.1:{free_port()}/readyz"
        options = OperatorOptions(
            resync_seconds=300,
            readiness_endpoint=self.ready_urls[who],
            leader_election=LeaderElection(LEASE_NAMESPACE, "shepherd", who, TIMING),
        )
        configuration = load_configuration(str(kubeconfig_for(self.local_api, who, self.directory)), who)
        return self.stack.enter_context(OperatorThread(configuration, options))


@pytest.fixture
def replicas(local_api: LocalAPIThread, tmp_path: Path) -> Iterator[Replicas]:
    with ExitStack() as stack:
        yield Replicas(local_api, tmp_path, stack)


@pytest.fixture
def cluster(local_api: LocalAPIThread, kubectl: object, kubelet: KubeletSimulator) -> Iterator[Cluster]:
    """The cluster of the stories, without the suite's own operator: the replicas here are the operators."""
    api = KubeAPI(load_configuration(str(local_api.kubeconfig_path)))
    yield Cluster(kubectl, api)  # type: ignore[arg-type]
    api.close()


def test_writes_to_the_lease_are_compare_and_swap(local_api: LocalAPIThread, tmp_path: Path) -> None:
    """What the election stands on: of two candidates writing the Lease as they read it, one wins."""
    a, b = (KubeAPI(load_configuration(str(kubeconfig_for(local_api, who, tmp_path)))) for who in "ab")
    spec = {"holderIdentity": "a", "leaseDurationSeconds": 3}

    assert a.write_lease(LEASE_NAMESPACE, "shepherd", None, spec, 5) is not None
    assert b.write_lease(LEASE_NAMESPACE, "shepherd", None, spec | {"holderIdentity": "b"}, 5) is None
    read_by_a, read_by_b = (api.get_lease(LEASE_NAMESPACE, "shepherd", 5) for api in (a, b))
    assert (
        b.write_lease(LEASE_NAMESPACE, "shepherd", read_by_b, spec | {"holderIdentity": "b"}, 5) is not None
    )
    assert a.write_lease(LEASE_NAMESPACE, "shepherd", read_by_a, spec, 5) is None, "a read an older version"
    assert holder(local_api) == "b"
    a.close()
    b.close()


def test_only_the_leader_acts_and_a_standby_takes_over_when_it_stops(
    cluster: Cluster, replicas: Replicas, local_api: LocalAPIThread
) -> None:
    first = replicas.start("a")
    wait_until(lambda: holder(local_api) == "a", message="replica a to hold the lease")
    replicas.start("b")
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)

    assert ("PATCH", "releases/status") in calls(requests_of(local_api, "a"))
    assert calls(requests_of(local_api, "b")) == {("GET", "leases")}, "the standby only looks at the lease"
    assert request_json("GET", replicas.ready_urls["a"]) == (
        200,
        {"ready": True, "message": "watching Releases"},
    )
    standby = {"ready": True, "message": "standing by; the leader is a"}
    assert request_json("GET", replicas.ready_urls["b"]) == (200, standby), "a standby is ready to take over"

    first.stop()  # a graceful stop releases the lease: the standby need not wait for it to expire
    wait_until(lambda: holder(local_api) == "b", message="replica b to take the lease")
    handed_over = len(list(local_api.emulator))
    cluster.apply(quickstart_release("1.1.0"))
    cluster.wait_phase("Succeeded", revision=2)

    writers = {who for who in "ab" if calls(requests_of(local_api, who, since=handed_over)) - LEASE_CALLS}
    assert writers == {"b"}


def test_a_leader_that_loses_its_lease_stops_writing_at_once(
    cluster: Cluster, replicas: Replicas, local_api: LocalAPIThread
) -> None:
    leader = replicas.start("a")
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)

    def take_the_lease() -> bool:
        """An intruder's update; a renewal between its read and its write makes it a conflict: again."""
        _, lease = request_json("GET", local_api.url + LEASE)
        lease["spec"] |= {"holderIdentity": "intruder", "leaseDurationSeconds": 3600}
        return request_json("PUT", local_api.url + LEASE, lease)[0] == 200

    wait_until(take_the_lease, message="the intruder's write to the Lease")
    taken = len(list(local_api.emulator))

    wait_until(lambda: isinstance(leader.error, LeadershipLost), message="the leader to give up")
    # Until it notices, it may still read (a reconcile finding nothing to do: the Release has settled), and a
    # renewal may race the intruder's write and fail on its resourceVersion. Nothing else is written.
    sent = calls(requests_of(local_api, "a", since=taken))
    assert {call for call in sent if call[0] != "GET"} <= LEASE_CALLS, "it wrote nothing after the loss"
    assert leader.runtime is not None
    with pytest.raises(NotLeading):
        leader.runtime.api.patch_status(SHOP, {"message": "late"})
    assert holder(local_api) == "intruder", "a lost lease is not released: it is someone else's"


def test_a_leader_cut_off_from_the_api_stops_acting_by_the_renew_deadline(tmp_path: Path) -> None:
    """No renewal gets through: the leader closes its write fence by itself and exits."""
    with LocalAPIThread() as lost_api:
        install_crds(lost_api.url, sorted(CRDS.glob("*.yaml")))
        options = OperatorOptions(
            resync_seconds=300, leader_election=LeaderElection(LEASE_NAMESPACE, "shepherd", "a", TIMING)
        )
        leader = OperatorThread(load_configuration(str(kubeconfig_for(lost_api, "a", tmp_path))), options)
        leader.__enter__()
    try:
        assert leader.runtime is not None and leader.runtime.api.fence is not None
        wait_until(lambda: isinstance(leader.error, LeadershipLost), timeout=30, message="the leader to stop")
        assert leader.runtime.api.fence() is False
        with pytest.raises(NotLeading):
            leader.runtime.api.patch_status(SHOP, {"message": "late"})
    finally:
        leader.stop()


def shepherd_run(kubeconfig: Path, who: str) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).with_name("shepherd")),
        "run",
        "--all-namespaces",
        "--resync=5m",
        f"--kubeconfig={kubeconfig}",
        f"--context={who}",
        "--leader-elect",
        f"--lease-namespace={LEASE_NAMESPACE}",
        f"--identity={who}",
        f"--lease-duration={TIMING.lease_duration:.0f}s",
        f"--renew-deadline={TIMING.renew_deadline}s",
        f"--retry-period={TIMING.retry_period}s",
    ]
    return spawn(command, kubeconfig.parent / f"operator-{who}.log")


def test_when_the_leader_dies_the_standby_acts_once_the_lease_expires(
    cluster: Cluster, local_api: LocalAPIThread, tmp_path: Path
) -> None:
    processes = {who: shepherd_run(kubeconfig_for(local_api, who, tmp_path), who) for who in ("a", "b")}
    try:
        leader = wait_until(lambda: holder(local_api), timeout=30, message="a leader")
        processes[leader].send_signal(signal.SIGKILL)  # no chance to release the lease
        processes[leader].wait(timeout=30)
        survivor = "b" if leader == "a" else "a"
        wait_until(lambda: holder(local_api) == survivor, timeout=30, message=f"{survivor} to take over")

        cluster.apply(quickstart_release("1.0.0"))
        cluster.wait_phase("Succeeded", revision=1)
        assert ("PATCH", "releases/status") in calls(requests_of(local_api, survivor))
        assert ("PATCH", "releases/status") not in calls(requests_of(local_api, leader))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=30) == 0
