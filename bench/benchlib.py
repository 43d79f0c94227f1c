"""What every bench shares: its size (full, or a smoke size that runs in seconds), percentiles that refuse
to summarise nothing, polling with a deadline, the quickstart Release applied by the real kubectl, and the
binaries of the real control plane it needs.

A bench exits non-zero when it is broken: an exception, a timeout, or a figure it did not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import kubernetes
import yaml

from shepherd import crdschema
from shepherd.lab.controlplane import binaries_problem, gateway_api_crds_problem
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread, install_crds

REPO = Path(__file__).resolve().parents[1]
# Where `make cluster-binaries` builds; the same variables as the control-plane tests read.
CLUSTER_BIN = Path(os.environ.get("SHEPHERD_CLUSTER_BIN", REPO / ".cluster" / "bin"))
GATEWAY_API_CRDS = Path(
    os.environ.get("SHEPHERD_GATEWAY_API_CRDS", REPO / ".cluster" / "crds" / "gateway-api")
)


class BenchFailed(SystemExit):
    """The bench could not measure what it reports: exits with status 1 and says why."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bench failed: {message}")


def fail(message: str) -> NoReturn:
    raise BenchFailed(message)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The bench's command line: its first docstring line as description, and --smoke."""
    described = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    described.add_argument(
        "--smoke", action="store_true", help="run at a smoke size (seconds): is the bench still working?"
    )
    return described


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile of values (none: the bench did not measure, and fails)."""
    if not values:
        fail("no samples to take a percentile of")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spread(values: Sequence[float], what: str) -> dict[str, float]:
    """p50, p99 and the number of samples of one measured figure; none measured fails the bench."""
    if not values:
        fail(f"no samples of {what}")
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "samples": len(values)}


def wait_for(what: str, check: Callable[[], object], timeout: float, poll: float = 0.02) -> float:
    """Seconds until check() holds; fails the bench past the timeout."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - started


def stamp(value: str) -> float:
    """A Kubernetes timestamp (RFC 3339, as in status or the audit log) as seconds since the epoch."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def admin_client(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    """A client of the bench's API server as the kubeconfig's user, its admin."""
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def local_api() -> Iterator[LocalAPIThread]:
    """The local API with Shepherd's CRDs (schema and CEL rules enforced), its pods played by the simulated
    kubelet."""
    with LocalAPIThread(validate_custom_object=crdschema.validate) as local:
        install_crds(local.url, sorted((REPO / "crds").glob("*.yaml")))
        kubelet = KubeletSimulator(local.url)
        local.call(kubelet.start())
        try:
            yield local
        finally:
            local.call(kubelet.stop())


def wait_until_admitted(custom: Any, release: dict[str, Any], timeout: float = 60.0) -> None:
    """Wait until the API server admits `release` (a dry-run create). Just after the chart is installed it
    answers 503 for a while: its MutatingAdmissionPolicy has no type converter for the new kind yet."""

    def admitted() -> bool:
        try:
            custom.create_namespaced_custom_object(
                "shepherd.dev",
                "v1alpha1",
                release["metadata"]["namespace"],
                "releases",
                release,
                dry_run="All",
            )
        except kubernetes.client.ApiException as error:
            if error.status == 503:
                return False
            raise
        return True

    wait_for("the API server to admit Releases", admitted, timeout, poll=0.2)


def quickstart(version: str) -> dict[str, Any]:
    """The Release of examples/quickstart.yaml at `version`, its images tagged with it."""
    release: dict[str, Any] = copy.deepcopy(
        next(
            d
            for d in yaml.safe_load_all((REPO / "examples" / "quickstart.yaml").read_text())
            if d and d["kind"] == "Release"
        )
    )
    release["spec"]["version"] = version
    for component in release["spec"]["components"]:
        component["template"]["spec"]["containers"][0]["image"] += f"-{version}"
    return release


def kubectl_apply(kubeconfig: Path, *documents: dict[str, Any]) -> None:
    """`kubectl apply` of the documents at once, as a user or a GitOps sync would."""
    kubectl = str(Path(sys.executable).with_name("kubectl"))
    applied = subprocess.run(
        [kubectl, "apply", "-f", "-"],
        input=yaml.safe_dump_all(documents),
        text=True,
        env=os.environ | {"KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        timeout=120,
    )
    if applied.returncode != 0:
        fail(f"kubectl apply: {applied.stderr.strip()}")


def need_control_plane(gateway_api: bool = False) -> Path:
    """The folder of the control plane's binaries; fails, naming the make target, when they are missing."""
    problem = binaries_problem(CLUSTER_BIN) or (
        gateway_api_crds_problem(GATEWAY_API_CRDS) if gateway_api else None
    )
    if problem is not None:
        fail(f"the real control plane cannot start: {problem}")
    return CLUSTER_BIN


class Process:
    """CPU seconds and RSS of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.ticks

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0
