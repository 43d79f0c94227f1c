"""Issue 11 on the real API server: the whole small canary (see canary_runs) with the fault proxy failing
every fifth write of the operator (500, 429 with Retry-After, or 409: every fifth rather than a random
fifth, so that a run of 15 writes or more meets the three faults it needs to prove anything), or cutting
every watch a few seconds after it began, promoted and aborted; and an abort whose status write fails
once. The rollout never goes backwards, each command acts exactly once, and the canary ends as it should."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes
import pytest

from canary_runs import RELEASE, Shepherd, at_indefinite_pause, command_closed, drive, phase_is
from helpers import wait_until
from shepherd.lab.cluster import InstalledChart
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.faultproxy import Fault, FaultProxy, fault
from shepherd.lab.podsim import PodSimulator

WRITES = ("POST", "PUT", "PATCH")
# A few failed passes in a row back off for 1s, 2s, 4s, 8s ... (up to 30s): a wait allows for that.
FAULTY_TIMEOUT = 150.0
FAULTS = {
    "every fifth write answered 500": lambda: fault(*WRITES, every=5, status=500),
    "every fifth write answered 429": lambda: fault(*WRITES, every=5, status=429),
    "every fifth write answered 409": lambda: fault(*WRITES, every=5, status=409),
    "every watch cut after 3s": lambda: fault("WATCH", cut_after=3.0),
}


@pytest.fixture(scope="module")
def proxy(control_plane: ControlPlane, pods: PodSimulator) -> Iterator[FaultProxy]:
    with FaultProxy.for_control_plane(control_plane, seed=11) as running:
        yield running


@pytest.fixture(scope="module")
def shepherd(
    control_plane: ControlPlane,
    chart: InstalledChart,
    admin: kubernetes.client.ApiClient,
    proxy: FaultProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shepherd]:
    with Shepherd(control_plane, chart, admin, proxy, tmp_path_factory.mktemp("api-faults")) as running:
        yield running


@pytest.mark.parametrize("command", ["promote", "abort"])
@pytest.mark.parametrize("faults", list(FAULTS))
def test_the_canary_under_api_faults(shepherd: Shepherd, faults: str, command: str) -> None:
    injected: Fault = FAULTS[faults]()
    with shepherd.run() as run:
        run.timeout = FAULTY_TIMEOUT
        if injected.cut_after is not None:
            # The run before cut the leader's watches, which come back after a backoff of up to 30 s: cut
            # now, with few of them open, a short run (an abort) met too few cuts to prove anything.
            wait_until(lambda: shepherd.proxy.open_watches() >= 3, 60.0, "the leader's watches open again")
        shepherd.proxy.reset_counts()
        shepherd.proxy.inject(injected)
        if injected.cut_after is not None:
            shepherd.proxy.cut_watches()  # the operator's watches open now are cut too, and come back
        problems, _ = drive(run, command, kill_at=None, keep_counts=True)
        hits = len(shepherd.proxy.injected()) if injected.status else shepherd.proxy.watches_cut
    line = f"{faults}, {command}: {hits} faults injected, property violations: {len(problems)}"
    print(f"\n{line}")
    assert not problems, f"{line}\n" + "\n".join(problems)
    assert hits >= 3, f"{line}: too few faults to prove anything"


def test_an_abort_whose_status_write_fails_once_acts_once(shepherd: Shepherd) -> None:
    proxy = shepherd.proxy
    with shepherd.run() as run:
        run.wait("revision 1 Succeeded", phase_is("Succeeded", 1))
        run.update("1.1.0")
        run.wait("the indefinite pause of revision 2", at_indefinite_pause)
        status_write = fault("PATCH", path=f"/releases/{RELEASE}/status$", status=500, times=1)
        proxy.inject(status_write)
        run.annotate("abort")
        final = run.wait("revision 2 RolledBack", phase_is("RolledBack", 2))
        final = run.wait("the abort annotation removed and closed", command_closed("abort"))
        run.settle()
        assert status_write.applied == 1, "the abort pass's status write failed"
        status = final["status"]
        assert status["reason"] == "Aborted"
        acts = [c for c in status["commands"] if c["annotation"] == "shepherd.dev/abort"]
        assert len(acts) == 1, acts
        assert [c["action"] for c in status["history"][-1]["commands"]].count("abort") == 1
        events = kubernetes.client.CoreV1Api(shepherd.admin).list_namespaced_event(run.namespace).items
        assert [e.reason for e in events if e.involved_object.name == RELEASE].count("Abort") == 1
        assert not run.timeline.violations(aborted=True)
        deployments = run.deployments()
        assert {n: d["spec"]["replicas"] for n, d in deployments.items() if d["spec"]["replicas"]} == {
            f"{RELEASE}-api": 2
        }
