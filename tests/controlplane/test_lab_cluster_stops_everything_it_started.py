"""Story: the lab cleans up after itself. `make cluster` (`python -m shepherd.lab.cluster`) stopped with
Ctrl-C, SIGTERM or SIGHUP stops every process it started (etcd, kube-apiserver, kube-controller-manager,
the operator) before it exits; killed with SIGKILL, which runs no cleanup, it leaves none running either,
as each dies with its parent. A ControlPlane left by an exception stops its processes too.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from helpers import wait_until
from shepherd.lab.controlplane import ControlPlane, binaries_problem
from shepherd.lab.processes import spawn, stop_process

CHART = Path(__file__).resolve().parents[2] / "charts" / "shepherd"
READY = "Press Ctrl-C to stop."
# What `make cluster` starts; `shepherd` is the operator (`shepherd run`).
STARTED = {"etcd", "kube-apiserver", "kube-controller-manager", "shepherd"}
# Seconds for what was told to stop to end: the lab gives each process 10 s (the operator 20) after SIGTERM.
END_TIMEOUT = 60.0


@pytest.fixture
def binaries(bin_dir: Path) -> Path:
    """Where the control plane's binaries are; the test fails, saying how to build them, without them."""
    problem = binaries_problem(bin_dir)
    if problem is not None:
        pytest.fail(f"the real control plane cannot start: {problem}", pytrace=False)
    return bin_dir


def still_running(processes: dict[psutil.Process, str]) -> list[str]:
    """Those of `processes` that still run, as "pid name". A zombie has ended (it only awaits reaping);
    a PID reused by another process is not the same psutil.Process."""
    running = []
    for process, name in processes.items():
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(f"{process.pid} {name}")
        except psutil.NoSuchProcess:
            pass
    return running


def wait_until_ended(processes: dict[psutil.Process, str], timeout: float = END_TIMEOUT) -> list[str]:
    """Poll until every one of `processes` has ended or `timeout` seconds passed; what still runs."""
    deadline = time.monotonic() + timeout
    while (running := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running


def descendants(pid: int) -> dict[psutil.Process, str]:
    """Every process descended from `pid`, with its name."""
    found = {}
    for process in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            found[process] = process.name()
    return found


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name
)
def test_make_cluster_stopped_by_a_signal_leaves_no_process_running(
    signum: signal.Signals, binaries: Path, tmp_path: Path
) -> None:
    output, workdir = tmp_path / "cluster.out", tmp_path / "cluster"
    # As `make cluster` runs it.
    module = [sys.executable, "-m", "shepherd.lab.cluster"]
    cluster = spawn([*module, f"--bin-dir={binaries}", f"--chart={CHART}", f"--workdir={workdir}"], output)
    started: dict[psutil.Process, str] = {}
    try:
        wait_until(
            lambda: READY in output.read_text() or cluster.poll() is not None,
            timeout=180,
            message="the cluster to say it is ready",
        )
        assert cluster.poll() is None, f"the cluster exited with {cluster.returncode}:\n{output.read_text()}"
        started = descendants(cluster.pid)
        assert set(started.values()) >= STARTED, f"it started {sorted(started.values())}"

        cluster.send_signal(signum)
        code = cluster.wait(timeout=END_TIMEOUT)

        survivors = wait_until_ended(started)
        assert not survivors, f"still running {END_TIMEOUT:g} s after {signum.name}: {survivors}"
        if signum == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:
            assert code == 0, output.read_text()
            assert "every process it started has stopped" in output.read_text()
    finally:
        stop_process(cluster)
        for process in started:  # what a failed story left behind
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def test_a_control_plane_left_by_an_exception_stops_its_processes(binaries: Path, tmp_path: Path) -> None:
    class Failure(Exception):
        pass

    started: dict[psutil.Process, str] = {}
    with pytest.raises(Failure), ControlPlane(binaries, tmp_path / "plane") as plane:
        started = {psutil.Process(process.popen.pid): process.name for process in plane.processes}
        assert set(started.values()) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        raise Failure("a story failed")

    assert not still_running(started), "ControlPlane.__exit__ waits for each process it stops"
