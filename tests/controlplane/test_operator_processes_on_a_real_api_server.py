"""Stories of the operator as a process on the real API server: killed with SIGKILL mid-canary and
resumed; two replicas sharing the chart's Lease; the chart's namespace-scoped RBAC; an automatic
rollback on bad metrics from the real Prometheus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from prometheus_fixtures import wait_for_value
from shepherd.core.promql import render_query
from shepherd.lab.cluster import InstalledChart, OperatorProcess, helm, install_chart
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.exporter import SeriesKey, TrafficExporter
from shepherd.lab.podsim import PodSimulator
from shepherd.lab.promserver import PrometheusServer
from shepherd.prometheus import Connection, Prometheus
from story import DEFAULT_TIMEOUT, Kubectl, Story, kubectl_runner, quickstart_release

CHART = Path(__file__).resolve().parents[2] / "charts" / "shepherd"


def test_an_operator_killed_mid_canary_resumes_where_it_was(story: Story) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    release = quickstart_release("1.1.0")
    release["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 25},
        {"pause": {"duration": "3s"}},
        {"setWeight": 50},
        {"pause": {}},
    ]
    story.apply(release)
    story.wait("the canary at 25%", lambda s: s.get("revision") == 2 and s.get("canaryWeight") == 25)

    story.operator.kill()
    story.operator.start()

    weights: list[int] = []

    def record(status: dict[str, object]) -> bool:
        weight = status.get("canaryWeight")
        if isinstance(weight, int) and (not weights or weights[-1] != weight):
            weights.append(weight)
        return status.get("phase") == "Paused" and status.get("currentStep") == 3

    story.wait("the indefinite pause after the restart", record)
    assert weights == sorted(weights) and weights[-1] == 50, f"the weight went backwards: {weights}"
    story.kubectl("release", "promote", "shop")
    story.wait_phase("Succeeded", revision=2)
    assert set(story.images().values()) == {
        "ghcr.io/example/shop-api:1.1.0",
        "ghcr.io/example/shop-web:1.1.0",
    }


def lease_holder(story: Story, namespace: str, name: str) -> str:
    """Who holds the Lease, "" before anyone took it."""
    try:
        lease = kubernetes.client.CoordinationV1Api(story.apps.api_client).read_namespaced_lease(
            name, namespace
        )
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


def test_two_replicas_share_the_lease_and_the_standby_takes_over(story: Story, tmp_path: Path) -> None:
    chart = story.operator.chart
    lease = next(a.split("=", 1)[1] for a in chart.args if a.startswith("--lease-name="))
    story.wait_until("a leader", lambda: lease_holder(story, chart.namespace, lease).startswith("shepherd-0"))
    with OperatorProcess(story.operator.control_plane, chart, tmp_path, identity="shepherd-1") as standby:
        story.apply(quickstart_release("1.0.0"))
        story.wait_phase("Succeeded", revision=1)
        assert "acting as the leader" not in standby.output()
        assert lease_holder(story, chart.namespace, lease).startswith("shepherd-0")

        story.operator.stop()  # a graceful stop hands the Lease over at once
        story.operator = standby
        story.wait_until(
            "the standby to lead",
            lambda: lease_holder(story, chart.namespace, lease).startswith("shepherd-1"),
        )
        story.apply(quickstart_release("1.1.0", strategy={"canary": {"steps": [{"setWeight": 50}]}}))
        story.wait_phase("Succeeded", revision=2)


@pytest.fixture
def scoped(control_plane: ControlPlane, namespace: str) -> Iterator[InstalledChart]:
    """The chart installed a second time, watching only the story's namespace; uninstalled after it, as its
    admission policies (cluster-wide, named after it) would otherwise also answer in later stories."""
    chart = install_chart(
        control_plane,
        CHART,
        name="shepherd-scoped",
        namespace="shepherd-scoped",
        values={"watchNamespace": [namespace]},
    )
    yield chart
    helm(control_plane, "uninstall", chart.name, "--namespace", chart.namespace, "--wait")


def test_the_namespace_scoped_chart_runs_a_release_in_its_namespace(
    control_plane: ControlPlane, pods: PodSimulator, namespace: str, scoped: InstalledChart, tmp_path: Path
) -> None:
    assert f"--namespace={namespace}" in scoped.args
    kubectl: Kubectl = kubectl_runner(control_plane.kubeconfig, namespace, tmp_path / "kube-cache")
    admin = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    with admin, OperatorProcess(control_plane, scoped, tmp_path) as operator:
        scoped_story = Story(admin, namespace, kubectl, operator)
        scoped_story.apply(quickstart_release("1.0.0"))
        scoped_story.wait_phase("Succeeded", revision=1)
        scoped_story.apply(quickstart_release("1.1.0"))
        scoped_story.wait_phase("Succeeded", revision=2)
        # A 403 reads "Forbidden" in the client's and Kopf's errors alike; a bare "403" can be a timestamp.
        assert "Forbidden" not in operator.output(), operator.output()
    # Outside its namespaces the operator may do nothing: the token the chart gives it says so.
    token_config = kubernetes.config.new_client_from_config(config_file=str(operator.kubeconfig))
    with token_config:
        review = kubernetes.client.AuthorizationV1Api(token_config).create_self_subject_access_review(
            {"spec": {"resourceAttributes": {"verb": "create", "group": "apps", "resource": "deployments"}}}
        )
    assert review.status.allowed is False


ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="{{namespace}}",release="{{release}}",version="{{version}}",'
    'code=~"5.."}[5s])) / sum(rate(http_requests_total{namespace="{{namespace}}",release="{{release}}",'
    'version="{{version}}"}[5s]))'
)


def test_bad_metrics_from_the_real_prometheus_roll_the_canary_back(
    story: Story, prometheus: PrometheusServer, exporter: TrafficExporter
) -> None:
    def serve(version: str, role: str, error_ratio: float) -> None:
        for component in ("api", "web"):
            key = SeriesKey(story.namespace, "shop", component, version, role)
            exporter.set_traffic(key, rps=50, error_ratio=error_ratio)
        query = render_query(
            ERROR_RATE, {"namespace": story.namespace, "release": "shop", "version": version}
        )
        wait_for_value(Prometheus(Connection(prometheus.url)), query)

    def analysed(version: str) -> dict[str, object]:
        metric = {"name": "error-rate", "query": ERROR_RATE, "max": 0.05, "count": 2}
        return quickstart_release(
            version,
            strategy={"canary": {"steps": [{"setWeight": 50}, {"analysis": {}}, {"setWeight": 75}]}},
            analysis={
                "prometheus": {"address": prometheus.url, "timeout": "2s"},
                "interval": "1s",
                "metrics": [metric],
            },
        )

    serve("1.0.0", "stable", 0.0)
    story.apply(analysed("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    serve("1.1.0", "canary", 0.2)
    story.apply(analysed("1.1.0"))

    status = story.wait(
        "the automatic rollback", lambda s: s.get("phase") == "RolledBack", timeout=DEFAULT_TIMEOUT
    )
    assert status["reason"] == "AnalysisFailed"
    failed = [r for r in status["analysis"] if r["result"] == "Failed"]
    assert failed and 0.1 < failed[-1]["value"] < 0.3
    assert story.replicas() == {"shop-api": 4, "shop-web": 2}
    assert json.dumps(story.images()).count("1.0.0") == 2
