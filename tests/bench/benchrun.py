"""Every bench of bench/ at its smoke size, run as `make bench` runs it (`python bench/<name>.py`, here with
`--smoke`): a bench that raises, times out or does not measure exits non-zero and fails its test, and the
test reads the figures the bench must print. The benches on the real control plane fail, never skip,
without its binaries, saying which make target builds them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A bench stopped by SIGINT stops what it started (control plane, Prometheus, operator) within this.
STOP_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class BenchRun:
    name: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def report(self) -> str:
        tail = "\n".join(self.stderr.splitlines()[-40:])
        return (
            f"bench/{self.name} exited {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stdout\n{self.stdout}\n--- stderr (last 40 lines)\n{tail}"
        )


def run(name: str, *args: str, timeout: float, env: Mapping[str, str] | None = None) -> BenchRun:
    """bench/<name> with `args` in a subprocess; past `timeout` it is interrupted (so it cleans up) and
    the test fails."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / name), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        late = BenchRun(name, process.returncode, stdout, stderr, time.monotonic() - started)
        pytest.fail(f"did not finish within {timeout:g}s: {late.report()}", pytrace=False)
    done = BenchRun(name, process.returncode, stdout, stderr, time.monotonic() - started)
    print(f"bench/{name} {' '.join(args)}: {done.seconds:.1f}s\n{stdout}")  # the figures, with `pytest -s`
    return done


def smoke(name: str, timeout: float) -> BenchRun:
    """bench/<name> --smoke; the test fails unless it exits 0."""
    done = run(name, "--smoke", timeout=timeout)
    if done.returncode != 0:
        pytest.fail(done.report(), pytrace=False)
    return done
