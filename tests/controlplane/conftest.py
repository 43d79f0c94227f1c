"""The real-control-plane tier: kube-apiserver, etcd and kube-controller-manager built from pinned Go
modules (`make cluster-binaries`), the chart installed by the real helm, the operator run with the chart's
ServiceAccount token, pods played by `shepherd.lab.podsim`.

Never skipped: without the binaries every test here fails, saying how to build them. One control plane
serves the session, with the Gateway API CRDs (standard channel, from the pinned sigs.k8s.io/gateway-api
module) installed; each test gets a namespace of its own and, when it asks, an operator of its own.
The stories that need Traefik (`make gateway-binaries`, part of `make test`) fail without it in CI and are
skipped elsewhere, saying why; one Traefik serves the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from helpers import unavailable
from shepherd.lab.cluster import InstalledChart, OperatorProcess, install_chart
from shepherd.lab.controlplane import (
    ControlPlane,
    binaries_problem,
    gateway_api_crds_problem,
    install_gateway_api_crds,
)
from shepherd.lab.faultproxy import FaultProxy, route_through
from shepherd.lab.gateway import ServiceProxy, Traefik, traefik_problem
from shepherd.lab.podsim import PodSimulator
from story import Kubectl, Story, kubectl_runner

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
BIN_DIR = Path(os.environ.get("SHEPHERD_CLUSTER_BIN", REPO / ".cluster" / "bin"))
CHART = REPO / "charts" / "shepherd"
GATEWAY_API_CRDS = Path(
    os.environ.get("SHEPHERD_GATEWAY_API_CRDS", REPO / ".cluster" / "crds" / "gateway-api")
)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    problem = binaries_problem(BIN_DIR) or gateway_api_crds_problem(GATEWAY_API_CRDS)
    if problem is not None:
        pytest.fail(f"the real control plane cannot start: {problem}", pytrace=False)
    with ControlPlane(BIN_DIR, tmp_path_factory.mktemp("controlplane")) as plane:
        install_gateway_api_crds(plane, GATEWAY_API_CRDS)
        yield plane


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """Where `make cluster-binaries` (and `make gateway-binaries`) built."""
    return BIN_DIR


@pytest.fixture(scope="session")
def gateway_api_crds(control_plane: ControlPlane) -> Path:
    """The folder of the Gateway API CRDs that the session's control plane serves."""
    return GATEWAY_API_CRDS


@pytest.fixture(scope="session")
def traefik(
    control_plane: ControlPlane, bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traefik]:
    """Traefik serving the Gateway gateway-system/edge; without it, the stories that need it fail in CI and
    are skipped elsewhere."""
    problem = traefik_problem(bin_dir)
    if problem is not None:
        unavailable(f"no real gateway: {problem}")
    with Traefik(control_plane, bin_dir, tmp_path_factory.mktemp("traefik")) as gateway:
        yield gateway


@pytest.fixture
def proxy(control_plane: ControlPlane, namespace: str) -> Iterator[ServiceProxy]:
    """The stand-in kube-proxy for the Services of the test's namespace."""
    with ServiceProxy(control_plane.kubeconfig, namespace) as stand_in:
        yield stand_in


@pytest.fixture(scope="session")
def pods(control_plane: ControlPlane) -> Iterator[PodSimulator]:
    with PodSimulator(control_plane.kubeconfig) as simulator:
        yield simulator


@pytest.fixture(scope="session")
def chart(control_plane: ControlPlane) -> InstalledChart:
    """charts/shepherd installed by helm in cluster-wide RBAC mode (no operator pod: replicas 0)."""
    return install_chart(control_plane, CHART)


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    with client:
        yield client


@pytest.fixture
def namespace(admin: kubernetes.client.ApiClient) -> Iterator[str]:
    name = f"story-{uuid.uuid4().hex[:8]}"
    core = kubernetes.client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def kubectl(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Kubectl:
    """The real kubectl as the admin, in the test's namespace (`--context alice` to be alice)."""
    return kubectl_runner(control_plane.kubeconfig, namespace, tmp_path / "kube-cache")


@pytest.fixture
def operator(
    control_plane: ControlPlane, chart: InstalledChart, pods: PodSimulator, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """`shepherd run` with the chart's arguments and its ServiceAccount's token."""
    with OperatorProcess(control_plane, chart, tmp_path) as process:
        yield process


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    """Arguments the operator behind the fault proxy gets beyond the chart's (a module may override this)."""
    return ()


@pytest.fixture
def fault_proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    """The fault proxy in front of the real API server, for one test."""
    with FaultProxy.for_control_plane(control_plane) as running:
        yield running


@pytest.fixture
def proxied_operator(
    control_plane: ControlPlane,
    chart: InstalledChart,
    pods: PodSimulator,
    fault_proxy: FaultProxy,
    operator_args: tuple[str, ...],
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """`shepherd run` as the `operator` fixture runs it, with `operator_args`, through the fault proxy."""
    process = OperatorProcess(control_plane, chart, tmp_path, extra_args=operator_args)
    route_through(process, fault_proxy)
    with process:
        yield process


@pytest.fixture
def proxied_story(
    admin: kubernetes.client.ApiClient, namespace: str, kubectl: Kubectl, proxied_operator: OperatorProcess
) -> Story:
    """A story whose operator talks to the API server through the fault proxy."""
    return Story(admin, namespace, kubectl, proxied_operator)


@pytest.fixture
def story(
    control_plane: ControlPlane,
    admin: kubernetes.client.ApiClient,
    namespace: str,
    kubectl: Kubectl,
    operator: OperatorProcess,
) -> Story:
    return Story(admin, namespace, kubectl, operator)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """A failing story shows the operator's log and the control plane's, whose files are kept."""
    report = yield
    if report.failed and call.when == "call":  # type: ignore[attr-defined]
        funcargs = getattr(item, "funcargs", {})
        operator = funcargs.get("operator")
        if isinstance(operator, OperatorProcess):
            tail = "\n".join(operator.output().splitlines()[-80:])
            report.sections.append(("operator log (last 80 lines)", tail))  # type: ignore[attr-defined]
        plane = funcargs.get("control_plane")
        if isinstance(plane, ControlPlane):
            report.sections.append(("control plane logs", plane.log_tail(20)))  # type: ignore[attr-defined]
            report.sections.append(("control plane folder", str(plane.workdir)))  # type: ignore[attr-defined]
    return report


from prometheus_fixtures import (  # noqa: E402,F401
    exporter,
    exporter_for_session,
    prometheus,
    prometheus_for_session,
)
