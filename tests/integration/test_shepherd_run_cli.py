"""Story: an operator runs `shepherd run` from a shell, with its kubeconfig, flags and liveness probe."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from cluster import QUICKSTART

from helpers import wait_until
from shepherd.kubelet import KubeletSimulator
from shepherd.localapi import LocalAPIThread


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_shepherd_run_rolls_out_and_answers_liveness(
    local_api: LocalAPIThread, kubectl: object, kubelet: KubeletSimulator, tmp_path: Path
) -> None:
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    log = (tmp_path / "operator.log").open("w")
    command = [
        str(Path(sys.executable).with_name("shepherd")),
        "run",
        "--all-namespaces",
        "--standalone",
        "--resync=5m",
        f"--kubeconfig={local_api.kubeconfig_path}",
        f"--liveness={liveness}",
    ]
    operator = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: healthy(liveness), timeout=30, message="the liveness endpoint")
        kubectl("apply", "-f", str(QUICKSTART))  # type: ignore[operator]
        kubectl("wait", "--for=condition=Ready", "release/shop", "--timeout=60s")  # type: ignore[operator]
    finally:
        operator.send_signal(signal.SIGTERM)
        code = operator.wait(timeout=30)
        log.close()
    assert code == 0, (tmp_path / "operator.log").read_text()


def test_shepherd_run_needs_a_namespace_choice() -> None:
    shepherd = str(Path(sys.executable).with_name("shepherd"))
    done = subprocess.run([shepherd, "run"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "-n/--namespace" in done.stderr and "-A/--all-namespaces" in done.stderr
