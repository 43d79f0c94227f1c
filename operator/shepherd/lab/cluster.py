"""Shepherd on the real control plane: the chart installed with the real helm, the operator run with its
ServiceAccount's token, and `make cluster` (`python -m shepherd.lab.cluster`) for people.

The operator runs out of cluster, as `shepherd run` with exactly the arguments of the chart's Deployment
(ports moved to free ones on 127.0.0.1), authenticated by a TokenRequest token of the chart's
ServiceAccount: every call it makes is authorized by the chart's own RBAC.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shepherd.core.gates import SPEC_AUTHOR
from shepherd.lab.controlplane import ControlPlane, ControlPlaneError, RequestError, free_port
from shepherd.lab.podsim import PodSimulator
from shepherd.lab.processes import Stopped, die_with_parent, signals_raise, spawn, stop_process
from shepherd.lab.watching import Lifecycle


@dataclass(frozen=True)
class InstalledChart:
    """A Helm release of charts/shepherd, and what its rendered Deployment runs."""

    name: str
    namespace: str
    service_account: str
    args: tuple[str, ...]
    manifests: tuple[dict[str, Any], ...]


def helm(control_plane: ControlPlane, *args: str, input: str | None = None) -> str:
    result = subprocess.run(
        [str(control_plane.bin_dir / "helm"), "--kubeconfig", str(control_plane.kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def install_chart(
    control_plane: ControlPlane,
    chart: Path,
    *,
    name: str = "shepherd",
    namespace: str = "shepherd-system",
    values: Mapping[str, Any] | None = None,
) -> InstalledChart:
    """`helm install` (or upgrade) of the chart; no operator pod runs (replicas 0) unless values say so."""
    values = {"replicas": 0, **(values or {})}
    helm(
        control_plane,
        "upgrade",
        "--install",
        name,
        str(chart),
        "--namespace",
        namespace,
        "--create-namespace",
        "--values",
        "-",
        input=yaml.safe_dump(values),
    )
    manifests = tuple(
        d for d in yaml.safe_load_all(helm(control_plane, "get", "manifest", name, "-n", namespace)) if d
    )
    mutated = any(d["kind"] == "MutatingAdmissionPolicy" for d in manifests)
    _wait_until_releases_are_admitted(control_plane, namespace, mutated)
    deployment = next(d for d in manifests if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "operator")
    return InstalledChart(
        name=name,
        namespace=namespace,
        service_account=pod["serviceAccountName"],
        args=tuple(container.get("args") or ()),
        manifests=manifests,
    )


def _wait_until_releases_are_admitted(
    control_plane: ControlPlane, namespace: str, mutated: bool, timeout: float = 60.0
) -> None:
    """helm returns once the CRDs and the admission policies exist; the API server takes some seconds more
    to load them: meanwhile a Release is created without the chart's mutating policy, then refused for a
    while (503 "Resource kind ... not found") while the policy is loaded without the Release's schema.
    A dry-run create of a valid Release, until it is admitted (and, with the `mutated` policy, mutated)."""
    container = {"name": "probe", "image": "probe"}
    probe = {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": "probe"},
        "spec": {
            "version": "0",
            "components": [{"name": "probe", "template": {"spec": {"containers": [container]}}}],
        },
    }
    path = f"/apis/shepherd.dev/v1alpha1/namespaces/{namespace}/releases?dryRun=All&fieldValidation=Strict"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            admitted = control_plane.request("POST", path, probe)
        except RequestError as error:
            if error.status not in (404, 503):
                return
            last = str(error)
        else:
            if not mutated or SPEC_AUTHOR in (admitted["metadata"].get("annotations") or {}):
                return
            last = f"admitted without the {SPEC_AUTHOR} annotation its policy sets"
        time.sleep(0.1)
    raise ControlPlaneError(f"Releases were not admitted {timeout:g}s after helm installed the chart: {last}")


def local_args(args: Sequence[str]) -> list[str]:
    """The chart's arguments with each served port moved to a free one on 127.0.0.1."""
    moved: list[str] = []
    for arg in args:
        if arg.startswith("--metrics-port="):
            arg = f"--metrics-port={free_port()}"
        arg = re.sub(r"http://0\.0\.0\.0:\d+", lambda _: f"http://127.0.0.1:{free_port()}", arg)
        moved.append(arg)
    return moved


@dataclass
class OperatorProcess(Lifecycle):
    """`shepherd run` with the chart's arguments and its ServiceAccount's token, in its own process."""

    control_plane: ControlPlane
    chart: InstalledChart
    workdir: Path
    identity: str = "shepherd-0"
    extra_args: Sequence[str] = ()
    executable: Path | None = None  # the `shepherd` to run; None: the one installed beside this Python
    popen: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.workdir / f"operator-{self.identity}.log"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / f"operator-{self.chart.name}.kubeconfig"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.kubeconfig.exists():
            self.control_plane.service_account_kubeconfig(
                self.chart.namespace, self.chart.service_account, self.kubeconfig
            )
        self.args = [*local_args(self.chart.args), *self.extra_args]
        environment = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "POD_NAME": self.identity,
            "POD_NAMESPACE": self.chart.namespace,
        }
        beside = shutil.which("shepherd", path=str(Path(sys.executable).parent))
        shepherd = str(self.executable or beside or "shepherd")
        self.popen = spawn([shepherd, *self.args], self.log, environment)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or released."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None:
            stop_process(self.popen, grace=20)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def shepherd_on_control_plane(
    bin_dir: Path, workdir: Path, chart: Path
) -> Iterator[tuple[ControlPlane, PodSimulator, InstalledChart, OperatorProcess]]:
    """The control plane, the pod simulator, the chart installed and its operator running."""
    with ControlPlane(bin_dir, workdir) as control_plane, PodSimulator(control_plane.kubeconfig) as pods:
        installed = install_chart(control_plane, chart)
        with OperatorProcess(control_plane, installed, workdir) as operator:
            yield control_plane, pods, installed, operator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shepherd.lab.cluster",
        description="Start a real control plane on 127.0.0.1, install the chart with helm, run the operator "
        "with the chart's ServiceAccount, and simulate the pods, until Ctrl-C.",
    )
    parser.add_argument("--bin-dir", type=Path, required=True, help="where `make cluster-binaries` built")
    parser.add_argument("--chart", type=Path, required=True, help="charts/shepherd")
    parser.add_argument("--workdir", type=Path, help="state and logs (default: a new temporary folder)")
    options = parser.parse_args(argv)
    workdir = (options.workdir or Path(tempfile.mkdtemp(prefix="shepherd-cluster-"))).resolve()
    # A new control plane each time: an old etcd would hold objects signed by another CA.
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # `make cluster` killed: this process stops as on SIGTERM, and so stops what it started.
    die_with_parent(signal.SIGTERM)
    try:
        with (
            signals_raise(),
            shepherd_on_control_plane(options.bin_dir, workdir, options.chart) as (plane, _, chart, operator),
        ):
            print(plane.version())
            print(
                f"Shepherd installed by helm as {chart.namespace}/{chart.name}; operator log: {operator.log}"
            )
            print("Logs of etcd, kube-apiserver and kube-controller-manager:", plane.logs)
            print("Use it from another terminal (contexts: admin, alice, bob):\n")
            print(f"  export KUBECONFIG={plane.kubeconfig}")
            print("  kubectl apply -f examples/quickstart.yaml && kubectl get releases -w\n")
            print("Press Ctrl-C to stop.", flush=True)
            threading.Event().wait()
    except (KeyboardInterrupt, Stopped) as stopped:
        print(f"{str(stopped) or 'stopped by SIGINT'}: every process it started has stopped", file=sys.stderr)
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
