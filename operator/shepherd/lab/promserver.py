"""A real Prometheus server on 127.0.0.1, for the test suite and `shepherd demo`.

It scrapes the given targets every second. `start()` returns only once Prometheus is ready and has
scraped every target once, so callers can query straight away. `stop()` and `start()` again keep
the same port and TSDB, the way a Prometheus restart looks to the operator.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from shepherd.lab.processes import spawn, stop_process

DEBIAN_BINARY = "/usr/bin/prometheus"
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05
LOG_TAIL_LINES = 20


class PrometheusNotInstalled(RuntimeError):
    pass


class PrometheusFailed(RuntimeError):
    """Prometheus exited or did not become ready; the message names its log file."""


def find_binary() -> str:
    if os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusNotInstalled(
            f"the Prometheus server is neither at {DEBIAN_BINARY} nor on PATH; "
            "install the Debian package `prometheus` (apt-get install prometheus)"
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrometheusServer:
    """`with PrometheusServer(["127.0.0.1:8000"]) as prometheus: ... prometheus.url ...`"""

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        binary: str | None = None,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
    ) -> None:
        self.targets = tuple(dict.fromkeys(targets))  # each target is scraped once, however often named
        self._binary = binary
        self._ready_timeout = ready_timeout
        self._directory: Path | None = None
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the Prometheus server was never started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def log_path(self) -> Path:
        return self._workdir() / "prometheus.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def start(self) -> None:
        """Start Prometheus (again) and wait until it has scraped every target; no-op when running.

        On failure the process is stopped and its directory kept, so the log the error names exists.
        """
        if self.running:
            return
        binary = self._binary or find_binary()
        if self._port is None:
            self._port = free_port()
        config = self._write_config()
        # No --web.enable-lifecycle: only this object stops the server, never an HTTP request.
        self._process = spawn(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._workdir() / 'data'}",
                f"--web.listen-address=127.0.0.1:{self._port}",
            ],
            self.log_path,
        )
        try:
            self._wait_until_scraped()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Prometheus gracefully (its TSDB stays for the next start); no-op when stopped."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT_SECONDS)

    def _workdir(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="shepherd-prometheus-"))
        return self._directory

    def _write_config(self) -> Path:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "shepherd-bench", "static_configs": [{"targets": self.targets}]}],
        }
        path = self._workdir() / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    def _wait_until_scraped(self) -> None:
        deadline = time.monotonic() + self._ready_timeout
        problem = "did not answer /-/ready"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise self._failure("exited while starting")
            if self._get("/-/ready") is not None:
                pending = self._targets_not_scraped()
                if not pending:
                    return
                problem = "did not scrape " + ", ".join(pending)
            time.sleep(POLL_SECONDS)
        raise self._failure(f"{problem} within {self._ready_timeout:g}s")

    def _targets_not_scraped(self) -> list[str]:
        """Each target not successfully scraped yet, with the reason Prometheus gives."""
        body = self._get("/api/v1/targets?state=active")
        if body is None:
            return ["any target (no answer from /api/v1/targets)"]
        # Service discovery fills activeTargets asynchronously: a target may not be listed yet.
        active = {
            target["labels"]["instance"]: target for target in json.loads(body)["data"]["activeTargets"]
        }
        reasons = {
            target: "not discovered yet"
            if target not in active
            else active[target]["lastError"] or active[target]["health"]
            for target in self.targets
        }
        return [f"{target} ({reason})" for target, reason in reasons.items() if reason != "up"]

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=1.0) as response:
                body: bytes = response.read()
                return body
        except (urllib.error.URLError, OSError):
            return None

    def _failure(self, what: str) -> PrometheusFailed:
        try:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            tail = []
        last_lines = "".join(f"\n  {line}" for line in tail)
        return PrometheusFailed(f"Prometheus at {self.url} {what}; its log is {self.log_path}:{last_lines}")
