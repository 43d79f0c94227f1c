"""Fixtures of the integration suite: a fresh local Kubernetes API per test, real kubectl, a kubelet.

`@pytest.mark.local_api(**options)` passes options to `LocalAPIThread` (e.g. `validate_custom_object`),
`@pytest.mark.kubelet(**options)` to `KubeletSimulator` (e.g. `delay`).
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import kubernetes
import pytest

from shepherd import crdschema
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread, install_crds
from story import kubectl_binary

# tests/ holds helpers.py; pytest puts only this directory on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


class Kubectl(Protocol):
    def __call__(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "local_api(**options): options of the test's LocalAPIThread")
    config.addinivalue_line("markers", "kubelet(**options): options of the test's KubeletSimulator")


def marker_options(request: pytest.FixtureRequest, name: str) -> dict[str, object]:
    marker = request.node.get_closest_marker(name)
    return dict(marker.kwargs) if marker is not None else {}


@pytest.fixture
def local_api(request: pytest.FixtureRequest) -> Iterator[LocalAPIThread]:
    """A fresh local Kubernetes API with every CRD of crds/ installed, and a kubeconfig for it.

    Custom resources are validated against their CRD like kube-apiserver does, unless a test's
    `local_api` marker says `validate_custom_object=None`."""
    options = {"validate_custom_object": crdschema.validate, **marker_options(request, "local_api")}
    with LocalAPIThread(**options) as api:  # type: ignore[arg-type]
        install_crds(api.url, sorted(CRD_DIR.glob("*.yaml")))
        yield api


@pytest.fixture
def kubectl(local_api: LocalAPIThread, tmp_path: Path) -> Kubectl:
    """Run the real kubectl on the local API; fail the test (with kubectl's stderr) unless check=False."""
    binary = kubectl_binary()
    # The interpreter's bin folder first, as for a user of this virtualenv: kubectl finds the
    # kubectl-release plugin there.
    env = os.environ | {
        "KUBECONFIG": str(local_api.kubeconfig_path),
        "KUBECACHEDIR": str(tmp_path / "kube-cache"),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }

    def run(
        *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} exited with {result.returncode}:\n{result.stderr}")
        return result

    return run


@pytest.fixture
def kube_client(local_api: LocalAPIThread) -> Iterator[kubernetes.client.ApiClient]:
    """The official Kubernetes client, configured from the local API's kubeconfig."""
    client = kubernetes.config.new_client_from_config(config_file=str(local_api.kubeconfig_path))
    with client:
        yield client


@pytest.fixture
def kubelet(local_api: LocalAPIThread, request: pytest.FixtureRequest) -> Iterator[KubeletSimulator]:
    """A simulated kubelet making the local API's Deployments and Jobs behave."""
    simulator = KubeletSimulator(local_api.url, **marker_options(request, "kubelet"))  # type: ignore[arg-type]
    local_api.call(simulator.start())
    yield simulator
    local_api.call(simulator.stop())


from operator_fixtures import cluster, shepherd  # noqa: E402,F401

from prometheus_fixtures import (  # noqa: E402,F401
    exporter,
    exporter_for_session,
    prometheus,
    prometheus_api,
    prometheus_for_session,
    series_key,
)
