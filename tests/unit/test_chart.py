"""The Helm chart, linted and rendered by Helm's own SDK (helm-python-sdk binds Helm's Go library)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from click.testing import CliRunner

from shepherd.cli import main
from shepherd.runner import OperatorOptions
from shepherd.sharding import Shard

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "shepherd"
DASHBOARD = CHART / "dashboards" / "shepherd.json"


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    manifests = chart.render(values, name="shepherd", namespace="shepherd-system")
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def rbac(objects: list[dict[str, Any]]) -> dict[tuple[str, str | None], set[str]]:
    """The resources each Role (by namespace) and ClusterRole (None) grants something on."""
    return {
        (o["metadata"]["name"], o["metadata"].get("namespace")): {
            f"{group}/{resource}"
            for rule in o["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
        }
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }


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

    assert sorted(o["kind"] for o in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
    ]
    account = only(objects, "ServiceAccount")["metadata"]
    subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": "shepherd-system"}
    for binding in (o for o in objects if o["kind"].endswith("Binding") and "subjects" in o):
        assert binding["subjects"] == [subject]
        assert only(objects, binding["roleRef"]["kind"], binding["roleRef"]["name"])
    assert only(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]


NAMESPACED = {
    "shepherd.dev/releases",
    "shepherd.dev/releases/status",
    "shepherd.dev/releaseapprovals",
    "apps/deployments",
    "apps/controllerrevisions",
    "batch/jobs",
    "/configmaps",
    "/events",
    "/secrets",
    "/services",
    "gateway.networking.k8s.io/httproutes",
}
CLUSTER_SCOPED = {
    "apiextensions.k8s.io/customresourcedefinitions",
    "shepherd.dev/releasepolicies",
    "/namespaces",
}


def test_all_namespaces_take_one_cluster_role_and_a_role_for_the_lease(chart: helm.Chart) -> None:
    objects = render(chart)

    assert rbac(objects) == {
        ("shepherd", None): NAMESPACED | CLUSTER_SCOPED,
        ("shepherd-leader-election", "shepherd-system"): {"coordination.k8s.io/leases"},
    }
    assert "--all-namespaces" in operator_container(objects)["args"]


@pytest.mark.parametrize(
    "watched", [pytest.param("shop", id="one"), pytest.param(["shop", "web"], id="list")]
)
def test_watched_namespaces_take_roles_and_a_cluster_role_only_for_what_is_cluster_scoped(
    chart: helm.Chart, watched: str | list[str]
) -> None:
    objects = render(chart, {"watchNamespace": watched})
    namespaces = [watched] if isinstance(watched, str) else watched

    assert rbac(objects) == {
        ("shepherd", None): CLUSTER_SCOPED,
        ("shepherd-leader-election", "shepherd-system"): {"coordination.k8s.io/leases"},
        **{("shepherd", namespace): NAMESPACED for namespace in namespaces},
    }
    bound = {
        (o["metadata"].get("namespace"), o["roleRef"]["name"]) for o in objects if o["kind"] == "RoleBinding"
    }
    assert bound == {("shepherd-system", "shepherd-leader-election"), *((n, "shepherd") for n in namespaces)}
    args = operator_container(objects)["args"]
    assert [a for a in args if a.startswith(("--namespace", "--all-namespaces"))] == [
        f"--namespace={n}" for n in namespaces
    ]


def test_the_chart_ships_the_top_level_crds_unchanged(chart: helm.Chart) -> None:
    top_level = sorted((ROOT / "crds").glob("*.yaml"))

    assert {"release.yaml", "releaseapproval.yaml", "releasepolicy.yaml"} <= {path.name for path in top_level}
    assert {Path(crd["filename"]).name: crd["data"] for crd in chart.crds} == {
        path.name: path.read_text(encoding="utf-8") for path in top_level
    }
    for path in top_level:
        assert (CHART / "crds" / path.name).read_bytes() == path.read_bytes()


def test_the_operator_runs_restricted(chart: helm.Chart) -> None:
    objects = render(chart)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
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


def test_two_replicas_of_which_the_lease_holder_acts(chart: helm.Chart) -> None:
    objects = render(chart)
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(objects)

    assert deployment["spec"]["replicas"] == 2
    # A new pod stands by, ready, beside the old ones until it takes the lease: updates never stop acting.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert container["image"] == "ghcr.io/release-shepherd/shepherd:0.1.0"
    assert [*container["command"], *container["args"]] == [
        "shepherd",
        "run",
        "--all-namespaces",
        "--leader-elect",
        "--lease-name=shepherd",
        "--lease-namespace=shepherd-system",
        "--lease-duration=15s",
        "--renew-deadline=10s",
        "--retry-period=2s",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--readiness=http://0.0.0.0:8080/readyz",
        "--resync=30s",
        "--request-timeout=30s",
        "--watch-idle-timeout=90s",
        "--pass-timeout=2m",
        "--outside-workers=16",
        "--unready-after=1m",
        "--unhealthy-after=5m",
        "--metrics-port=9090",
    ]
    assert container["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    lease_rules = only(objects, "Role", "shepherd-leader-election")["rules"]
    assert {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["shepherd"],
        "verbs": ["get", "update"],
    } in lease_rules
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        spread["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )


def test_liveness_and_readiness_probes(chart: helm.Chart) -> None:
    container = operator_container(render(chart))

    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {"name": "health", "containerPort": 8080} in container["ports"]


def test_the_lease_timing_comes_from_values(chart: helm.Chart) -> None:
    timing = {"leaseDuration": "30s", "renewDeadline": "20s", "retryPeriod": "4s"}
    args = operator_container(render(chart, {"replicas": 1, "leaderElection": timing}))["args"]

    assert {"--lease-duration=30s", "--renew-deadline=20s", "--retry-period=4s"} <= set(args)


def test_metrics_are_served_and_optionally_scraped_by_the_prometheus_operator(chart: helm.Chart) -> None:
    objects = render(chart)
    assert {"name": "metrics", "containerPort": 9090} in operator_container(objects)["ports"]
    service = only(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics"}]
    assert "ServiceMonitor" not in {o["kind"] for o in objects}
    monitored = render(
        chart, {"metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "interval": "15s"}}}
    )
    assert only(monitored, "ServiceMonitor")["spec"]["endpoints"] == [{"port": "metrics", "interval": "15s"}]
    assert "--metrics-port=9100" in operator_container(monitored)["args"]


def test_resync_comes_from_values(chart: helm.Chart) -> None:
    assert "--resync=1m" in operator_container(render(chart, {"resync": "1m"}))["args"]


def test_the_deadlines_come_from_values(chart: helm.Chart) -> None:
    values = {"timeouts": {"request": "10s", "pass": "5m", "outsideWorkers": 4, "unhealthyAfter": "10m"}}
    args = operator_container(render(chart, values))["args"]
    assert {
        "--request-timeout=10s",
        "--pass-timeout=5m",
        "--outside-workers=4",
        "--unhealthy-after=10m",
    } <= set(args)
    assert "--watch-idle-timeout=90s" in args, "the values not given keep their defaults"


def test_the_grafana_dashboard_is_an_optional_config_map_for_the_sidecar(chart: helm.Chart) -> None:
    assert "ConfigMap" not in {o["kind"] for o in render(chart)}

    values = {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "Shepherd"}}}
    config_map = only(render(chart, values), "ConfigMap")

    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Shepherd"}
    assert config_map["data"] == {"shepherd.json": DASHBOARD.read_text(encoding="utf-8").rstrip("\n")}
    assert json.loads(config_map["data"]["shepherd.json"])["uid"] == "shepherd-releases"


@pytest.mark.parametrize(
    ("values", "offending"),
    [
        pytest.param({"replicas": "two"}, "/replicas", id="replicas-not-an-integer"),
        pytest.param({"replicas": 3}, "/replicas", id="three-operators"),
        pytest.param({"resync": "thirty seconds"}, "/resync", id="bad-duration"),
        pytest.param(
            {"leaderElection": {"leaseDuration": "soon"}}, "/leaderElection/leaseDuration", id="bad-lease"
        ),
        pytest.param(
            {"leaderElection": {"renewDeadline": 10}}, "/leaderElection/renewDeadline", id="lease-number"
        ),
        pytest.param({"leaderElection": {"leaseTime": "15s"}}, "'leaseTime' not allowed", id="lease-typo"),
        pytest.param({"watchNamespace": "Shop"}, "/watchNamespace", id="bad-namespace"),
        pytest.param({"watchNamespace": ["shop", "Web"]}, "/watchNamespace", id="bad-namespace-in-list"),
        pytest.param({"watchNamespace": []}, "/watchNamespace", id="empty-list"),
        pytest.param({"dashboard": {"enabled": "yes"}}, "/dashboard/enabled", id="bad-dashboard-switch"),
        pytest.param(
            {"dashboard": {"labels": {"grafana_dashboard": 1}}}, "/dashboard/labels", id="label-number"
        ),
        pytest.param({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", id="bad-pull-policy"),
        pytest.param({"approvalPolicy": {"enabled": "yes"}}, "/approvalPolicy/enabled", id="bad-switch"),
        pytest.param({"approvalPolicy": {"fourEyes": "yes"}}, "/approvalPolicy/fourEyes", id="bad-four-eyes"),
        pytest.param({"replica": 1}, "'replica' not allowed", id="typo"),
        pytest.param({"timeouts": {"pass": "forever"}}, "/timeouts/pass", id="bad-pass-deadline"),
        pytest.param(
            {"timeouts": {"outsideWorkers": 0}}, "/timeouts/outsideWorkers", id="no-outside-threads"
        ),
        pytest.param({"timeouts": {"read": "5s"}}, "'read' not allowed", id="timeout-typo"),
    ],
)
def test_the_values_schema_rejects_bad_values(
    chart: helm.Chart, values: dict[str, Any], offending: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(offending)):
        chart.render(values, name="shepherd", namespace="shepherd-system")


def test_the_default_values_satisfy_the_schema(chart: helm.Chart) -> None:
    chart.validate_schema(chart.values)


def shard_deployments(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Deployment"]


def test_an_unsharded_chart_passes_no_shard_and_labels_none(chart: helm.Chart) -> None:
    objects = render(chart)

    assert render(chart, {"sharding": {"shards": 1}}) == objects
    (deployment,) = shard_deployments(objects)
    assert deployment["metadata"]["name"] == "shepherd"
    assert not [a for a in operator_container(objects)["args"] if a.startswith("--shard")]
    assert "shepherd.dev/shard" not in yaml.safe_dump(objects)


def test_each_shard_is_a_deployment_of_replicas_pods_on_a_selector_of_its_own(chart: helm.Chart) -> None:
    deployments = shard_deployments(render(chart, {"sharding": {"shards": 3}}))

    assert [d["metadata"]["name"] for d in deployments] == [f"shepherd-shard-{i}" for i in range(3)]
    for index, deployment in enumerate(deployments):
        spec = deployment["spec"]
        (container,) = spec["template"]["spec"]["containers"]
        assert spec["replicas"] == 2, "one pod of the shard acts, the other stands by"
        assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        assert container["args"][:6] == [
            "run",
            "--all-namespaces",
            "--leader-elect",
            "--lease-name=shepherd",
            "--shards=3",
            f"--shard-index={index}",
        ]
        selector = spec["selector"]["matchLabels"]
        assert selector["shepherd.dev/shard"] == str(index)
        spread = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
        term = spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert term["labelSelector"]["matchLabels"] == selector, "a shard's standby avoids its leader's node"
        for other in deployments:
            labels = other["spec"]["template"]["metadata"]["labels"]
            selected = selector.items() <= labels.items()
            assert selected is (other is deployment), "a shard's Deployment selects only its own pods"


def test_each_shard_pod_leader_elects_on_a_lease_the_role_names(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's own arguments, parsed by `shepherd run`: each shard elects on a Lease the Role allows."""
    objects = render(chart, {"sharding": {"shards": 2}, "replicas": 1})
    elected: list[tuple[str, Shard]] = []

    async def run_until_signalled(configuration: object, options: OperatorOptions) -> None:
        assert options.leader_election is not None
        elected.append((options.leader_election.name, options.shard))

    monkeypatch.setattr("shepherd.cli.load_configuration", lambda *_: None)
    monkeypatch.setattr("shepherd.cli._run_until_signalled", run_until_signalled)
    for deployment in shard_deployments(objects):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        result = CliRunner().invoke(main, container["args"])
        assert result.exit_code == 0, result.output

    assert elected == [("shepherd-shard-0-of-2", Shard(0, 2)), ("shepherd-shard-1-of-2", Shard(1, 2))]
    lease_rules = only(objects, "Role", "shepherd-leader-election")["rules"]
    assert {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [name for name, _ in elected],
        "verbs": ["get", "update"],
    } in lease_rules


@pytest.mark.parametrize(
    ("shards", "offending"),
    [
        pytest.param(0, "/sharding/shards", id="no-shards"),
        pytest.param(17, "/sharding/shards", id="too-many"),
        pytest.param("2", "/sharding/shards", id="a-string"),
    ],
)
def test_the_values_schema_rejects_a_bad_shard_count(
    chart: helm.Chart, shards: object, offending: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(offending)):
        chart.render({"sharding": {"shards": shards}}, name="shepherd", namespace="shepherd-system")


def test_the_values_schema_rejects_an_unknown_sharding_value(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="'count' not allowed"):
        chart.render({"sharding": {"count": 2}}, name="shepherd", namespace="shepherd-system")


def test_the_dashboard_web_is_off_by_default(chart: helm.Chart) -> None:
    assert not [o for o in render(chart) if o["metadata"]["name"] == "shepherd-dashboard"]


def test_the_dashboard_web_is_read_only_with_its_own_service_account(chart: helm.Chart) -> None:
    objects = render(chart, {"dashboard": {"web": {"enabled": True}}})
    deployment = only(objects, "Deployment", "shepherd-dashboard")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "shepherd-dashboard"
    assert container["args"] == ["dashboard", "--in-cluster", "--address=0.0.0.0", "--port=3100"]
    assert "--allow-actions" not in container["args"]
    role = only(objects, "ClusterRole", "shepherd-dashboard")
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"get", "list", "watch"}
    binding = only(objects, "ClusterRoleBinding", "shepherd-dashboard")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "shepherd-dashboard", "namespace": "shepherd-system"}
    ]
    bound = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert [b["metadata"]["name"] for b in bound if "shepherd-dashboard" in str(b["subjects"])] == [
        "shepherd-dashboard"
    ], "no other role is bound to the dashboard's ServiceAccount"
    service = only(objects, "Service", "shepherd-dashboard")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    operator = only(objects, "Deployment", "shepherd")["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not operator.items() <= labels.items(), (
        "the operator's selector does not take the dashboard's pods"
    )


def test_the_dashboard_web_values_are_checked(chart: helm.Chart) -> None:
    with pytest.raises(Exception, match="port"):
        render(chart, {"dashboard": {"web": {"enabled": True, "port": "http"}}})
