"""Story: an operator runs `shepherd run` from a shell, with its kubeconfig, flags and health probes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from cluster import QUICKSTART

from helpers import free_port, wait_until
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread, write_kubeconfig
from shepherd.lab.processes import spawn


def probe(url: str) -> tuple[int, dict[str, object]] | None:
    """The status and JSON answer of a probe endpoint, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
    except OSError:
        return None


def healthy(url: str) -> bool:
    answer = probe(url)
    return answer is not None and answer[0] == 200


def test_shepherd_run_rolls_out_and_answers_liveness_and_readiness(
    local_api: LocalAPIThread, kubectl: object, kubelet: KubeletSimulator, tmp_path: Path
) -> None:
    port = free_port()
    liveness, readiness = f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{port}/readyz"
    command = [
        str(Path(sys.executable).with_name("shepherd")),
        "run",
        "--all-namespaces",
        "--standalone",
        "--resync=5m",
        f"--kubeconfig={local_api.kubeconfig_path}",
        f"--liveness={liveness}",
        f"--readiness={readiness}",
    ]
    operator = spawn(command, tmp_path / "operator.log")
    try:
        wait_until(lambda: healthy(readiness), timeout=30, message="the readiness endpoint")
        assert probe(readiness) == (200, {"ready": True, "message": "watching Releases"})
        assert healthy(liveness)
        kubectl("apply", "-f", str(QUICKSTART))  # type: ignore[operator]
        kubectl("wait", "--for=condition=Ready", "release/shop", "--timeout=60s")  # type: ignore[operator]
    finally:
        operator.send_signal(signal.SIGTERM)
        code = operator.wait(timeout=30)
    assert code == 0, (tmp_path / "operator.log").read_text()


def test_shepherd_run_needs_a_namespace_choice() -> None:
    shepherd = str(Path(sys.executable).with_name("shepherd"))
    done = subprocess.run([shepherd, "run"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "-n/--namespace" in done.stderr and "-A/--all-namespaces" in done.stderr


def test_shepherd_run_without_a_safe_mode_refuses_to_start(local_api: LocalAPIThread) -> None:
    """Neither --leader-elect nor --standalone: Kopf's peering alone would let two replicas act at once."""
    shepherd = str(Path(sys.executable).with_name("shepherd"))
    command = [shepherd, "run", "-A", f"--kubeconfig={local_api.kubeconfig_path}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--leader-elect" in done.stderr and "--standalone" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_candidate_without_the_api_is_alive_but_not_ready(tmp_path: Path) -> None:
    unreachable = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}")
    port = free_port()
    liveness, readiness = f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{port}/readyz"
    command = [
        str(Path(sys.executable).with_name("shepherd")),
        "run",
        "-A",
        "--leader-elect",
        f"--kubeconfig={unreachable}",
        f"--liveness={liveness}",
        f"--readiness={readiness}",
    ]
    operator = spawn(command, tmp_path / "operator.log")
    try:
        wait_until(lambda: healthy(liveness), timeout=30, message="the liveness endpoint")
        assert probe(readiness) == (503, {"ready": False, "message": "no contact with the API server"})
    finally:
        operator.send_signal(signal.SIGTERM)  # a candidate that never led stops on a signal too
        code = operator.wait(timeout=30)
    assert code == 0, (tmp_path / "operator.log").read_text()
