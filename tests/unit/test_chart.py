"""The Helm chart, linted and rendered by Helm's own SDK (helm-python-sdk binds Helm's Go library)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "shepherd"


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The rendered objects by kind (the chart has one object of each kind)."""
    manifests = chart.render(values, name="shepherd", namespace="shepherd-system")
    objects = [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]
    by_kind = {obj["kind"]: obj for obj in objects}
    assert len(by_kind) == len(objects), "one object per kind"
    return by_kind


def operator_container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def test_lint_passes() -> None:
    report = helm.lint(CHART, strict=True)

    assert report["errors"] == []
    assert [
        m for m in report["messages"] if m["severity"] >= 2
    ] == []  # only infos, e.g. "icon is recommended"


def test_chart_metadata(chart: helm.Chart) -> None:
    metadata = chart.metadata
    assert (metadata["apiVersion"], metadata["name"], metadata["version"], metadata["appVersion"]) == (
        "v2",
        "shepherd",
        "0.1.0",
        "0.1.0",
    )


def test_renders_the_operator_and_its_rbac(chart: helm.Chart) -> None:
    objects = render(chart)

    assert sorted(objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    account = objects["ServiceAccount"]["metadata"]
    binding = objects["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == objects["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": "shepherd-system"}
    ]
    assert objects["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]


def test_the_chart_ships_the_top_level_crds_unchanged(chart: helm.Chart) -> None:
    top_level = sorted((ROOT / "crds").glob("*.yaml"))

    assert {"release.yaml", "releaseapproval.yaml", "releasepolicy.yaml"} <= {path.name for path in top_level}
    assert {Path(crd["filename"]).name: crd["data"] for crd in chart.crds} == {
        path.name: path.read_text(encoding="utf-8") for path in top_level
    }
    for path in top_level:
        assert (CHART / "crds" / path.name).read_bytes() == path.read_bytes()


def test_the_cluster_role_grants_only_what_the_operator_uses(chart: helm.Chart) -> None:
    rules = render(chart)["ClusterRole"]["rules"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:  # a resource in several rules (Kopf's and Shepherd's) gets the union of their verbs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])

    assert granted == {
        ("shepherd.dev", "releases"): {"get", "list", "watch", "patch"},
        ("shepherd.dev", "releases/status"): {"get", "patch"},
        ("shepherd.dev", "releaseapprovals"): {"get", "list", "watch"},
        ("shepherd.dev", "releasepolicies"): {"get", "list", "watch"},
        ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
        ("apps", "controllerrevisions"): {"get", "list", "watch", "create", "patch", "delete"},
        ("batch", "jobs"): {"list", "watch", "create", "delete"},
        ("", "events"): {"create", "patch"},
        ("", "configmaps"): {"list", "create", "delete"},
        ("", "secrets"): {"get"},
        # What Kopf itself needs: peering, and observing CRDs and namespaces (list, watch); Shepherd reads a
        # namespace's labels (get) to match the policies' namespaceSelectors.
        ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
        ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "namespaces"): {"get", "list", "watch"},
    }


def test_the_operator_runs_restricted(chart: helm.Chart) -> None:
    objects = render(chart)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = operator_container(objects)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_operator_watches_all_namespaces_with_a_liveness_probe(chart: helm.Chart) -> None:
    objects = render(chart)
    container = operator_container(objects)

    assert objects["Deployment"]["spec"]["replicas"] == 1
    assert objects["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}
    assert container["image"] == "ghcr.io/release-shepherd/shepherd:0.1.0"
    assert [*container["command"], *container["args"]] == [
        "shepherd",
        "run",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--resync=30s",
        "--metrics-port=9090",
    ]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert {"name": probe["port"], "containerPort": 8080} in container["ports"]


def test_metrics_are_served_and_optionally_scraped_by_the_prometheus_operator(chart: helm.Chart) -> None:
    objects = render(chart)
    assert {"name": "metrics", "containerPort": 9090} in operator_container(objects)["ports"]
    assert objects["Service"]["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics"}]
    assert "ServiceMonitor" not in objects
    monitored = render(
        chart, {"metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "interval": "15s"}}}
    )
    assert monitored["ServiceMonitor"]["spec"]["endpoints"] == [{"port": "metrics", "interval": "15s"}]
    assert "--metrics-port=9100" in operator_container(monitored)["args"]


def test_watch_namespace_and_resync_come_from_values(chart: helm.Chart) -> None:
    container = operator_container(render(chart, {"watchNamespace": "shop", "resync": "1m"}))

    assert container["args"][1:2] == ["--namespace=shop"]
    assert "--resync=1m" in container["args"]


@pytest.mark.parametrize(
    ("values", "offending"),
    [
        pytest.param({"replicas": "two"}, "/replicas", id="replicas-not-an-integer"),
        pytest.param({"replicas": 2}, "/replicas", id="two-operators"),
        pytest.param({"resync": "thirty seconds"}, "/resync", id="bad-duration"),
        pytest.param({"watchNamespace": "Shop"}, "/watchNamespace", id="bad-namespace"),
        pytest.param({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", id="bad-pull-policy"),
        pytest.param({"approvalPolicy": {"enabled": "yes"}}, "/approvalPolicy/enabled", id="bad-switch"),
        pytest.param({"replica": 1}, "'replica' not allowed", id="typo"),
    ],
)
def test_the_values_schema_rejects_bad_values(
    chart: helm.Chart, values: dict[str, Any], offending: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(offending)):
        chart.render(values, name="shepherd", namespace="shepherd-system")


def test_the_default_values_satisfy_the_schema(chart: helm.Chart) -> None:
    chart.validate_schema(chart.values)
