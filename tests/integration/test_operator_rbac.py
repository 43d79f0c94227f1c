"""Story: the chart's RBAC grants the operator exactly the calls it makes, cluster-wide and in one namespace.

The calls are measured, not declared. The operator runs with the command line the chart renders, against the
local API, through a Release's whole life (Kopf's own calls and leader election included); then every
method of KubeAPI, the module through which the operator makes all its calls, is called once more directly,
so that calls the story does not reach (reading a Prometheus Secret, deleting a canary) count too. The
lists and watches of the operator's cache are made by the operator's run itself. Every
request in the local API's log is then authorized against the rendered Roles and ClusterRoles the way
kube-apiserver's RBAC authorizer does, and every granted verb must have been used by some request.
"""

from __future__ import annotations

import inspect
import os
import re
import signal
import subprocess
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import helm_python as helm
import kmock
import pytest
import yaml
from cluster import quickstart_release

from helpers import free_port, request_json, wait_until
from shepherd.core.actions import (
    Action,
    ApplyConfigMap,
    ApplyDeployment,
    ApplyService,
    CreateJob,
    DeleteConfigMap,
    DeleteDeployment,
    DeleteJob,
    DeleteRevision,
    Event,
    PatchRoute,
    RecordRevision,
    RemoveAnnotations,
)
from shepherd.kube import KubeAPI, ReleaseKey, load_configuration
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread, install_crds, write_kubeconfig
from shepherd.lab.processes import spawn

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
CHART = Path(__file__).resolve().parents[2] / "charts" / "shepherd"
RELEASE_NAMESPACE = "shepherd-system"  # the Helm release's, where the operator and its Lease live
WATCHED = "shop"  # where the Releases are
MODES = {"cluster-wide": {}, "one namespace": {"watchNamespace": WATCHED}}
TOKEN, USER = "token-operator", "operator"  # the operator's own token tells its requests apart in the log
POLICY = {"apiVersion": "shepherd.dev/v1alpha1", "kind": "ReleasePolicy"}
LEASE = "shepherd"  # the chart's full name, for a Helm release named shepherd
EXERCISED = ReleaseKey(WATCHED, "exercised")
GATEWAY_API_CRDS = Path(__file__).resolve().parents[2] / ".cluster" / "crds" / "gateway-api"


def gateway_api_crd(plural: str) -> Path:
    """A Gateway API CRD as `make cluster-binaries` copies it from the pinned module."""
    path = GATEWAY_API_CRDS / f"gateway.networking.k8s.io_{plural}.yaml"
    if not path.exists():
        pytest.fail(f"{path} is missing: run make cluster-binaries", pytrace=False)
    return path


@dataclass(frozen=True)
class Call:
    """One request, as RBAC sees it."""

    verb: str
    group: str
    resource: str  # with its subresource, e.g. releases/status
    namespace: str | None
    name: str | None


@dataclass(frozen=True)
class Grant:
    """One verb on one resource, granted by a rule of a bound Role (in `namespace`) or ClusterRole (None)."""

    role: str
    namespace: str | None
    group: str
    resource: str
    verb: str
    names: tuple[str, ...]

    def allows(self, call: Call) -> bool:
        return (
            (self.group, self.resource, self.verb) == (call.group, call.resource, call.verb)
            and self.namespace in (None, call.namespace)
            and (not self.names or call.name in self.names)
        )


def call_of(request: kmock.Request) -> Call | None:
    if request.resource is None or not request.resource.plural:
        return None  # discovery, which every authenticated user may read
    watching = request.params.get("watch") in ("true", "1")
    verb = {
        "GET": "watch" if watching else "get" if request.name else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if request.name else "deletecollection",
    }[str(request.method.value)]
    resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    return Call(verb, request.resource.group or "", resource, request.namespace, request.name)


def granted(objects: list[dict[str, Any]], account: str, namespace: str) -> set[Grant]:
    """Every verb the rendered bindings give the ServiceAccount."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o.get("rules") or []
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }
    grants = set()
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        if subject not in binding["subjects"]:
            continue
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        for rule in roles[(ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])]:
            names = tuple(rule.get("resourceNames") or ())
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        grants.add(Grant(f"{ref['kind']} {ref['name']}", scope, group, resource, verb, names))
    return grants


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="shepherd", namespace=RELEASE_NAMESPACE)
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def operator_command(objects: list[dict[str, Any]], kubeconfig: Path) -> list[str]:
    """The chart's container command, on free local ports instead of the pod's."""
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    health, metrics = free_port(), free_port()
    args = [
        re.sub(
            r"^--metrics-port=\d+$",
            f"--metrics-port={metrics}",
            arg.replace("0.0.0.0:8080", f"127.0.0.1:{health}"),
        )
        for arg in container["args"]
    ]
    shepherd = str(Path(sys.executable).with_name(container["command"][0]))
    return [shepherd, *args, f"--kubeconfig={kubeconfig}", f"--context={USER}"]


def in_namespace(release: dict[str, Any], name: str = "shop") -> str:
    release["metadata"] |= {"name": name, "namespace": WATCHED}
    return yaml.safe_dump(release)


# Every method of KubeAPI, called once, and every action the core can ask `apply` to carry out.


def owned(uid: str) -> dict[str, Any]:
    return {
        "namespace": WATCHED,
        "labels": {"app.kubernetes.io/instance": EXERCISED.name, "app.kubernetes.io/managed-by": "shepherd"},
        "annotations": {},
        "ownerReferences": [
            {"apiVersion": "shepherd.dev/v1alpha1", "kind": "Release", "name": EXERCISED.name, "uid": uid}
        ],
    }


def deployment(uid: str) -> dict[str, Any]:
    pod = {
        "metadata": {"labels": {"app": "exercised"}},
        "spec": {"containers": [{"name": "a", "image": "a:1"}]},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "exercised-api", **owned(uid)},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "exercised"}}, "template": pod},
    }


def actions(uid: str, route_version: str = "") -> list[Action]:
    revision = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": 1, "data": {}}
    pod = {"spec": {"restartPolicy": "Never", "containers": [{"name": "smoke", "image": "smoke:1"}]}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": pod}}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True, "data": {"LOG_LEVEL": "info"}}
    return [
        ApplyDeployment(deployment(uid), exists=False),
        ApplyDeployment(deployment(uid), exists=False),  # the create conflicts: read, then patch
        DeleteDeployment("exercised-api"),
        ApplyConfigMap(config | {"metadata": {"name": "exercised-config-5d8f", **owned(uid)}}),
        DeleteConfigMap("exercised-config-5d8f"),
        RecordRevision({**revision, "metadata": {"name": "exercised-1", **owned(uid)}}),
        DeleteRevision("exercised-1"),
        CreateJob({**job, "metadata": {"name": "exercised-smoke-1", **owned(uid)}}),
        DeleteJob("exercised-smoke-1"),
        RemoveAnnotations(("shepherd.dev/promote",)),
        ApplyService(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "exercised-api-canary", **owned(uid)},
                "spec": {"ports": [{"port": 80}]},
            }
        ),
        PatchRoute(
            WATCHED,
            "exercised",
            route_version,
            ({"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},),
        ),
    ]


def route_version(api: KubeAPI) -> str:
    """The resourceVersion of the HTTPRoute the exercise patches (read without the operator's token: the
    operator itself has it from its cache)."""
    path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{WATCHED}/httproutes/exercised"
    code, route = request_json("GET", api.configuration.host + path)
    assert code == 200, route
    return str(route["metadata"]["resourceVersion"])


def event(api: KubeAPI) -> None:
    release = api.get_release(EXERCISED) or {}
    api.post_event(release, Event("Normal", "Exercised", "every call"), datetime.now(UTC))


def write_lease(api: KubeAPI) -> None:
    api.write_lease(RELEASE_NAMESPACE, LEASE, api.get_lease(RELEASE_NAMESPACE, LEASE, 5), {}, 5)


EXERCISES: dict[str, Callable[[KubeAPI, str], object]] = {
    "get_release": lambda api, uid: api.get_release(EXERCISED),
    "read_secret": lambda api, uid: api.read_secret(WATCHED, "prometheus-credentials"),
    "apply": lambda api, uid: [
        api.apply(EXERCISED, action, {}) for action in actions(uid, route_version(api))
    ],
    "patch_status": lambda api, uid: api.patch_status(EXERCISED, {"message": "exercised"}),
    "post_event": lambda api, uid: event(api),
    "get_lease": lambda api, uid: api.get_lease(RELEASE_NAMESPACE, LEASE, 5),
    "write_lease": lambda api, uid: write_lease(api),
}


def test_every_call_of_the_operator_is_exercised() -> None:
    methods = {
        name for name, _ in inspect.getmembers(KubeAPI, inspect.isfunction) if not name.startswith("_")
    }

    assert methods - {"close"} == set(EXERCISES), "a new KubeAPI method needs an entry in EXERCISES"
    assert {type(a) for a in actions("")} == set(typing.get_args(Action)), (
        "a new action needs one in actions()"
    )


def phase(api: KubeAPI, key: ReleaseKey) -> str | None:
    return ((api.get_release(key) or {}).get("status") or {}).get("phase")


def routes_watched(local_api: LocalAPIThread) -> bool:
    token = f"Bearer {TOKEN}"
    calls = (call_of(r) for r in list(local_api.emulator) if r.headers.get("Authorization") == token)
    return any(c is not None and (c.resource, c.verb) == ("httproutes", "watch") for c in calls)


def run_the_chart_command_through_a_release(
    objects: list[dict[str, Any]], local_api: LocalAPIThread, kubectl: Kubectl, kubeconfig: Path, log: Path
) -> None:
    """`shepherd run` as the chart starts it, while a Release is created, rolled out and deleted."""
    reader = KubeAPI(load_configuration(str(local_api.kubeconfig_path)))
    env = os.environ | {"POD_NAME": "shepherd-0"}  # the downward API's, in a pod
    operator = spawn(operator_command(objects, kubeconfig), log, env)
    try:
        kubectl("apply", "-f", "-", input=in_namespace(quickstart_release("1.0.0")))
        key = ReleaseKey(WATCHED, "shop")
        wait_until(lambda: phase(reader, key) == "Succeeded", timeout=60, message="the Release to succeed")
        kubectl("delete", "release", "shop", f"--namespace={WATCHED}", "--timeout=60s")
        # A Release routed by Gateway API makes the operator follow HTTPRoutes (it does not on its own).
        routed = quickstart_release("1.0.0")
        gateway = {"httpRoutes": [{"name": "exercised", "component": "api"}]}
        routed["spec"]["strategy"]["canary"]["trafficRouting"] = {"gatewayAPI": gateway}
        kubectl("apply", "-f", "-", input=in_namespace(routed, "routed"))
        wait_until(lambda: routes_watched(local_api), timeout=30, message="the operator to watch HTTPRoutes")
        kubectl("delete", "release", "routed", f"--namespace={WATCHED}", "--timeout=60s")
    finally:
        operator.send_signal(signal.SIGTERM)  # a graceful stop: the Lease is released
        code = operator.wait(timeout=60)
        reader.close()
    assert code == 0, log.read_text()


@pytest.mark.parametrize("mode", list(MODES))
def test_the_chart_grants_exactly_the_calls_the_operator_makes(
    mode: str, local_api: LocalAPIThread, kubectl: Kubectl, kubelet: KubeletSimulator, tmp_path: Path
) -> None:
    objects = render(MODES[mode])
    for namespace in (WATCHED, RELEASE_NAMESPACE):
        code, _ = request_json(
            "POST", f"{local_api.url}/api/v1/namespaces", {"metadata": {"name": namespace}}
        )
        assert code == 201
    install_crds(local_api.url, [gateway_api_crd("httproutes")])
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "exercised"},
    }
    kubectl("apply", f"--namespace={WATCHED}", "-f", "-", input=yaml.safe_dump(route | {"spec": {}}))
    policy = {"metadata": {"name": "everywhere"}, "spec": {"description": "selects every namespace"}}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(POLICY | policy))  # so the namespace's labels are read
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", local_api.url, users={TOKEN: USER})
    run_the_chart_command_through_a_release(
        objects, local_api, kubectl, kubeconfig, tmp_path / "operator.log"
    )
    # A create that conflicts reads the Deployment and patches it at that version: no kubelet may change it
    # in between.
    local_api.call(kubelet.stop())
    kubectl("apply", "-f", "-", input=in_namespace(quickstart_release("1.0.0"), EXERCISED.name))
    api = KubeAPI(load_configuration(str(kubeconfig), USER))
    uid = (api.get_release(EXERCISED) or {})["metadata"]["uid"]
    for exercise in EXERCISES.values():
        exercise(api, uid)
    api.close()

    token = f"Bearer {TOKEN}"
    requests = [r for r in list(local_api.emulator) if r.headers.get("Authorization") == token]
    calls = {call for request in requests if (call := call_of(request)) is not None}
    grants = granted(objects, "shepherd", RELEASE_NAMESPACE)
    denied = sorted({c for c in calls if not any(g.allows(c) for g in grants)}, key=str)
    unused = sorted({g for g in grants if not any(g.allows(c) for c in calls)}, key=str)
    assert {"calls not granted": denied, "grants never used": unused} == {
        "calls not granted": [],
        "grants never used": [],
    }
