"""e2e: the same stories on a real cluster (kind in CI) with Shepherd installed by its Helm chart.

Runs only when KUBECONFIG points at a reachable cluster that has the Release CRD: .github/workflows/e2e.yaml
runs it on kind (`make test` leaves it out). Without one every test here fails in CI and is skipped
elsewhere, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest

from helpers import unavailable


def _cluster_problem() -> str | None:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        return "no cluster: KUBECONFIG is not set (tests/e2e run on a real cluster, e.g. kind)"
    try:
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        kubernetes.client.VersionApi(client).get_code(_request_timeout=5)
        kubernetes.client.ApiextensionsV1Api(client).read_custom_resource_definition(
            "releases.shepherd.dev", _request_timeout=5
        )
    except kubernetes.client.exceptions.ApiException as error:
        if error.status == 404:
            return "Shepherd is not installed in this cluster: helm install shepherd charts/shepherd first"
        return f"the cluster in KUBECONFIG answered {error.status}: {error.reason}"
    except Exception as error:
        return f"no reachable cluster in KUBECONFIG={kubeconfig}: {error}"
    return None


@pytest.fixture(scope="session", autouse=True)
def cluster() -> None:
    """The cluster of KUBECONFIG, with Shepherd installed; asked once for the session."""
    problem = _cluster_problem()
    if problem is not None:
        unavailable(problem)


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"shepherd-e2e-{uuid.uuid4().hex[:6]}"
    run_kubectl("create", "namespace", name)
    yield name
    run_kubectl("delete", "namespace", name, "--wait=false")


def run_kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).with_name("kubectl")
    binary = str(beside) if beside.is_file() else shutil.which("kubectl") or "kubectl"
    result = subprocess.run(
        [binary, *args], input=input, capture_output=True, text=True, check=False, timeout=300
    )
    if check and result.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result


@pytest.fixture
def kubectl(namespace: str) -> Kubectl:
    def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return run_kubectl("-n", namespace, *args, **kwargs)  # type: ignore[arg-type]

    return run
