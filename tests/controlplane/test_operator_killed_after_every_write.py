"""Issue 11 on the real API server: the operator SIGKILLed after its k-th write, for every k of a whole
canary, and replaced at once, never moves the rollout backwards nor loses or repeats a command.

A clean run through the fault proxy counts the operator's writes in the run's namespace from revision 2's
update on (N; the Lease renewals are elsewhere); then, for each k in 1..N, a fresh namespace runs the same
canary, and the proxy SIGKILLs the leader right after the server answered its k-th write, before the
operator reads the answer; the standby takes over at once. The promote (or abort) annotation is given
once, when the indefinite pause is reached. Every version of the Release and its Deployments is checked
(see canary_runs), and the final state each time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from canary_runs import RELEASE, Shepherd, Timeline, drive
from shepherd.lab.cluster import InstalledChart
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.faultproxy import FaultProxy
from shepherd.lab.podsim import PodSimulator


@pytest.fixture
def proxy(control_plane: ControlPlane, pods: PodSimulator) -> Iterator[FaultProxy]:
    with FaultProxy.for_control_plane(control_plane) as running:
        yield running


@pytest.mark.timeout(900)
@pytest.mark.parametrize("command", ["promote", "abort"])
def test_the_canary_killed_after_each_of_its_writes(
    command: str,
    control_plane: ControlPlane,
    chart: InstalledChart,
    admin: kubernetes.client.ApiClient,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    violations: dict[int, list[str]] = {}
    missed = []
    with Shepherd(control_plane, chart, admin, proxy, tmp_path) as shepherd:
        with shepherd.run() as clean:
            problems, _ = drive(clean, command)
            writes = list(proxy.written)
        assert not problems, f"the clean {command} run: {problems}"
        n = len(writes)
        assert n > 5, writes
        for k in range(1, n + 1):
            with shepherd.run() as run:
                found, killed = drive(run, command, kill_at=k)
            if not killed:
                missed.append(k)
            if found:
                violations[k] = found
    line = f"kill points: {n}, runs: {n}, property violations: {sum(map(len, violations.values()))}"
    print(f"\n{command}: the clean run's writes: {', '.join(f'{v} {p}' for _, v, p, _ in writes)}")
    print(f"{command}: {line} (killed in {n - len(missed)} runs; fewer than k writes in {missed or 'none'})")
    assert not violations, (
        f"{line}\n"
        + "\n".join(f"killed after write {k}: {v}" for k, v in violations.items())
        + f"\nthe last operator's log:\n{shepherd.logs()}"
    )
    assert len(missed) <= n // 5, f"{line}; the operator made fewer than k writes for k in {missed}"


def release_version(weight: int, phase: str = "Progressing") -> dict[str, Any]:
    return {"metadata": {"name": RELEASE}, "status": {"revision": 2, "phase": phase, "canaryWeight": weight}}


def deployment_version(name: str, revision: int, replicas: int) -> dict[str, Any]:
    labels = {"shepherd.dev/revision": str(revision)}
    return {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": labels}}},
    }


def violations(*versions: tuple[str, dict[str, Any]], aborted: bool = False) -> list[str]:
    timeline = Timeline(admin=None, namespace="n")  # type: ignore[arg-type]
    timeline.versions = [(rv, kind, "MODIFIED", obj) for rv, (kind, obj) in enumerate(versions, start=1)]
    return [v.what for v in timeline.violations(aborted=aborted)]


def test_the_checker_sees_each_property_broken_and_allows_promotion_and_rollback() -> None:
    stable, canary = f"{RELEASE}-api", f"{RELEASE}-api-canary"
    promoted = [
        ("Deployment", deployment_version(stable, 1, 2)),
        ("Release", release_version(50)),
        ("Deployment", deployment_version(canary, 2, 1)),
        ("Deployment", deployment_version(stable, 1, 1)),
        ("Release", release_version(100, "Promoting")),
        ("Deployment", deployment_version(stable, 2, 2)),
        ("Deployment", deployment_version(canary, 2, 0)),
    ]
    assert violations(*promoted) == []
    assert violations(*promoted, ("Release", release_version(50))) == [
        "canaryWeight went from 100 to 50 in revision 2"
    ]
    assert violations(*promoted, ("Deployment", deployment_version(stable, 1, 2))) == [
        "stable went back to revision 1's template"
    ]
    assert violations(*promoted[:3], ("Deployment", deployment_version(canary, 2, 0))) == [
        "canary replicas went from 1 to 0"
    ]
    assert violations(*promoted, aborted=True) == ["stable took revision 2's template in an aborted canary"]
    rolled_back = [
        *promoted[:4],
        ("Release", release_version(50, "RollingBack")),
        ("Deployment", deployment_version(canary, 2, 0)),
        ("Deployment", deployment_version(stable, 1, 2)),
        ("Release", release_version(0, "RolledBack")),
    ]
    assert violations(*rolled_back, aborted=True) == []
