"""The local Kubernetes API behaves as kube-apiserver does wherever kubectl, Kopf or the client would notice.

One test (or one group of tests) per behaviour that kmock 0.8 lacks: through the real kubectl where a user
would see it, through the official client or plain HTTP for the rest.
"""

import dataclasses
import json
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiException, AppsV1Api, CoreV1Api, CustomObjectsApi

from helpers import request_json, stream_events, wait_until
from shepherd.lab.localapi import LocalAPIThread, install_crds

GROUP, VERSION, PLURAL = "example.shepherd.dev", "v1", "widgets"
WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": PLURAL, "singular": "widget", "shortNames": ["wd"]},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def widget(name: str, size: int = 3, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name, **metadata},
        "spec": {"size": size},
    }


def configmap(name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, **metadata},
        "data": {"k": "v"},
    }


def error_reason(error: ApiException) -> str:
    reason: str = json.loads(error.body)["reason"]
    return reason


@pytest.fixture
def crd_file(tmp_path: Path) -> Path:
    path = tmp_path / "widget-crd.yaml"
    path.write_text(yaml.safe_dump(WIDGET_CRD))
    return path


@pytest.fixture
def widgets(
    local_api: LocalAPIThread, crd_file: Path, kube_client: kubernetes.client.ApiClient
) -> CustomObjectsApi:
    install_crds(local_api.url, [crd_file])
    return CustomObjectsApi(kube_client)


@pytest.fixture
def core(kube_client: kubernetes.client.ApiClient) -> CoreV1Api:
    return CoreV1Api(kube_client)


def watch_in_background(url: str) -> list[dict[str, Any]]:
    """Collect the events of a watch stream in a thread, until the server ends it."""
    events: list[dict[str, Any]] = []

    def collect() -> None:
        for event in stream_events(url):
            events.append(event)

    threading.Thread(target=collect, daemon=True).start()
    return events


# What a user sees through kubectl.


def test_kubectl_applies_a_crd_and_waits_until_it_is_established(kubectl, crd_file):
    kubectl("apply", "-f", str(crd_file))
    waited = kubectl("wait", "--for", "condition=established", f"crd/{PLURAL}.{GROUP}", "--timeout=20s")
    resources = kubectl("api-resources", f"--api-group={GROUP}", "--no-headers")

    assert "condition met" in waited.stdout
    assert resources.stdout.split() == ["widgets", "wd", f"{GROUP}/{VERSION}", "true", "Widget"]


def test_kubectl_get_prints_the_printer_columns(kubectl, widgets, tmp_path):
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(widget("x", size=7)))
    kubectl("apply", "-f", str(tmp_path / "x.yaml"))
    status = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    widgets.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "x", status)

    by_plural = kubectl("get", "widgets").stdout.splitlines()
    by_short_name = kubectl("get", "wd", "-o", "custom-columns=NAME:.metadata.name,SIZE:.spec.size").stdout

    assert by_plural[0].split() == ["NAME", "SIZE", "READY", "AGE"]
    assert by_plural[1].split()[:3] == ["x", "7", "True"]
    assert re.fullmatch(r"\d+s", by_plural[1].split()[3])
    assert by_short_name.split() == ["NAME", "SIZE", "x", "7"]


def test_kubectl_get_watch_prints_every_change_with_the_printer_columns(kubectl, widgets, local_api):
    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x", size=1))
    with ThreadPoolExecutor(1) as executor:
        # The request timeout ends the watch, and kubectl with it.
        watching = executor.submit(kubectl, "get", "widgets", "--watch", "--request-timeout=2s")
        wait_until(lambda: local_api.emulator.open_watches, message="kubectl to watch the widgets")
        widgets.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x", {"spec": {"size": 2}})
        lines = watching.result(timeout=30).stdout.splitlines()

    assert [line.split()[:2] for line in lines] == [["NAME", "SIZE"], ["x", "1"], ["x", "2"]]


def test_kubectl_get_lists_built_in_resources_by_short_name(kubectl):
    kubectl("apply", "-f", "-", input=yaml.safe_dump(configmap("settings")))

    namespaces = kubectl("get", "ns", "--no-headers").stdout
    configmaps = kubectl("get", "cm", "-o", "name").stdout

    assert namespaces.split()[0] == "default"
    assert configmaps.split() == ["configmap/settings"]


def test_kubectl_apply_again_is_unchanged_and_a_change_is_configured(kubectl, widgets, tmp_path):
    manifest = tmp_path / "x.yaml"
    manifest.write_text(yaml.safe_dump(widget("x", size=1)))
    created = kubectl("apply", "-f", str(manifest)).stdout
    unchanged = kubectl("apply", "-f", str(manifest)).stdout
    manifest.write_text(yaml.safe_dump(widget("x", size=2)))
    configured = kubectl("apply", "-f", str(manifest)).stdout

    stored = widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")
    assert [created, unchanged, configured] == [
        f"widget.{GROUP}/x created\n",
        f"widget.{GROUP}/x unchanged\n",
        f"widget.{GROUP}/x configured\n",
    ]
    assert stored["spec"] == {"size": 2}
    assert stored["metadata"]["generation"] == 2


def test_kubectl_apply_of_a_deployment_merges_containers_by_name(kubectl, kube_client, tmp_path):
    container = {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
        },
    }
    manifest = tmp_path / "web.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    kubectl("apply", "-f", str(manifest))
    container["image"] = "app:2"
    manifest.write_text(yaml.safe_dump(deployment))
    kubectl("apply", "-f", str(manifest))

    stored = AppsV1Api(kube_client).read_namespaced_deployment("web", "default")
    assert [(c.image, c.ports[0].container_port) for c in stored.spec.template.spec.containers] == [
        ("app:2", 80)
    ]


def test_kubectl_annotate_adds_and_removes_annotations(kubectl, widgets):
    widgets.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, widget("x", annotations={"a": "1"})
    )

    kubectl("annotate", "widget", "x", "b=2")
    added = widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")
    kubectl("annotate", "wd", "x", "a-")
    removed = widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")

    assert added["metadata"]["annotations"] == {"a": "1", "b": "2"}
    assert removed["metadata"]["annotations"] == {"b": "2"}
    assert removed["spec"] == {"size": 3}


def test_kubectl_wait_sees_a_condition_set_later_through_status(kubectl, widgets, local_api):
    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x"))
    with ThreadPoolExecutor(1) as executor:
        waiting = executor.submit(kubectl, "wait", "--for=condition=Ready", "widget/x", "--timeout=20s")
        wait_until(lambda: local_api.emulator.open_watches, message="kubectl to watch the widget")
        status = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Done"}]}}
        widgets.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "x", status)
        result = waiting.result(timeout=30)

    assert result.stdout == f"widget.{GROUP}/x condition met\n"


def test_kubectl_delete_removes_the_object(kubectl, widgets):
    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x"))

    kubectl("delete", "widget", "x")
    missing = kubectl("get", "widget", "x", check=False)

    assert missing.returncode == 1
    assert missing.stderr.strip() == f'Error from server (NotFound): {PLURAL}.{GROUP} "x" not found'


# Who a request comes from.

USERS = {"token-alice": "alice@example.com", "token-bob": "bob"}
SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


@pytest.mark.local_api(users=USERS)
def test_kubectl_auth_whoami_names_the_user_of_each_context(kubectl):
    def whoami(*context: str) -> str:
        return kubectl("auth", "whoami", *context, "-o", "jsonpath={.status.userInfo.username}").stdout

    assert whoami("--context", "alice@example.com") == "alice@example.com"
    assert whoami("--context", "bob") == "bob"
    assert whoami() == "kubernetes-admin"
    as_table = kubectl("auth", "whoami", "--context", "bob").stdout.split()
    assert as_table == ["ATTRIBUTE", "VALUE", "Username", "bob", "Groups", "[system:authenticated]"]


@pytest.mark.local_api(users=USERS)
def test_the_users_contexts_reach_the_api_over_verified_tls(local_api):
    config = yaml.safe_load(local_api.kubeconfig_path.read_text())
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    contexts = {c["name"]: c["context"] for c in config["contexts"]}

    secure = clusters[contexts["bob"]["cluster"]]
    assert secure["server"].startswith("https://") and "certificate-authority-data" in secure
    assert clusters[contexts[config["current-context"]]["cluster"]]["server"] == local_api.url
    path = str(local_api.kubeconfig_path)
    client = kubernetes.config.new_client_from_config(config_file=path, context="bob")
    with client:
        assert CoreV1Api(client).read_namespace("default").metadata.name == "default"


@pytest.mark.parametrize(
    ("authorization", "code", "username"),
    [
        ({"Authorization": "Bearer token-bob"}, 201, "bob"),
        ({"Authorization": "Bearer shepherd-local-token"}, 201, "kubernetes-admin"),
        ({}, 201, "kubernetes-admin"),
        ({"Authorization": "Bearer stolen"}, 401, None),
    ],
)
@pytest.mark.local_api(users=USERS)
def test_a_self_subject_review_answers_the_user_of_the_bearer_token(local_api, authorization, code, username):
    request = urllib.request.Request(
        local_api.url + SELF_SUBJECT_REVIEWS,
        data=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **authorization},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answered, body = response.status, json.load(response)
    except urllib.error.HTTPError as error:
        answered, body = error.code, json.load(error)

    assert answered == code
    if username is None:
        assert body["reason"] == "Unauthorized"
    else:
        assert body["kind"] == "SelfSubjectReview" and body["status"]["userInfo"]["username"] == username


# Schema admission.


@dataclasses.dataclass(frozen=True)
class FieldError:
    field: str
    message: str


def at_most_100(crd: dict[str, Any], obj: dict[str, Any]) -> list[tuple[str, str]]:
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    return [("spec.size", "must be at most 100")] if obj["spec"]["size"] > 100 else []


def size_and_colour(crd: dict[str, Any], obj: dict[str, Any]) -> list[FieldError]:
    return [
        FieldError("spec.colour", "Required value"),
        FieldError("spec.size", 'Unsupported value: 7: supported values: "1", "2"'),
    ]


@pytest.mark.local_api(validate_custom_object=at_most_100)
def test_kubectl_apply_reports_a_schema_violation_as_kube_apiserver_does(kubectl, widgets, tmp_path):
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(widget("big", size=200)))

    rejected = kubectl("apply", "-f", str(tmp_path / "big.yaml"), check=False)

    assert rejected.returncode == 1
    assert (
        rejected.stderr.strip()
        == 'The Widget "big" is invalid: spec.size: Invalid value: 200: must be at most 100'
    )


@pytest.mark.local_api(validate_custom_object=at_most_100)
def test_schema_violations_are_rejected_on_every_write(local_api, widgets):
    objects = f"{local_api.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x", size=100))

    code, status = request_json(
        "PATCH", f"{objects}/x", {"spec": {"size": 101}}, content_type="application/merge-patch+json"
    )

    assert code == 422
    assert status["reason"] == "Invalid"
    assert (
        status["message"]
        == f'Widget.{GROUP} "x" is invalid: spec.size: Invalid value: 101: must be at most 100'
    )
    assert status["details"] == {
        "name": "x",
        "group": GROUP,
        "kind": "Widget",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "field": "spec.size",
                "message": "Invalid value: 101: must be at most 100",
            }
        ],
    }
    assert widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")["spec"]["size"] == 100


@pytest.mark.local_api(validate_custom_object=size_and_colour)
def test_several_violations_are_listed_with_their_own_error_types(local_api, widgets):
    objects = f"{local_api.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"

    code, status = request_json("POST", objects, widget("x", size=7))

    assert code == 422
    assert status["message"] == (
        f'Widget.{GROUP} "x" is invalid: '
        '[spec.colour: Required value, spec.size: Unsupported value: 7: supported values: "1", "2"]'
    )
    assert [cause["reason"] for cause in status["details"]["causes"]] == [
        "FieldValueRequired",
        "FieldValueNotSupported",
    ]


# Object metadata: resourceVersion, uid, creationTimestamp, generation.


def test_every_write_takes_a_new_resource_version_and_lists_report_the_latest(core):
    first = core.create_namespaced_config_map("default", configmap("a"))
    second = core.create_namespaced_config_map("default", configmap("b"))
    patched = core.patch_namespaced_config_map("a", "default", {"data": {"k": "w"}})
    unchanged = core.patch_namespaced_config_map("a", "default", {"data": {"k": "w"}})
    listed = core.list_namespaced_config_map("default")

    versions = [int(o.metadata.resource_version) for o in (first, second, patched)]
    assert versions == sorted(set(versions))
    assert unchanged.metadata.resource_version == patched.metadata.resource_version
    assert listed.metadata.resource_version == patched.metadata.resource_version


def test_a_created_object_gets_a_uid_a_creation_timestamp_and_generation_1(local_api, core):
    first = core.create_namespaced_config_map("default", configmap("a"))
    second = core.create_namespaced_config_map("default", {"metadata": {"generateName": "b-"}})
    _, stored = request_json("GET", f"{local_api.url}/api/v1/namespaces/default/configmaps/a")

    assert first.metadata.uid != second.metadata.uid
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", first.metadata.uid)
    assert RFC3339.fullmatch(stored["metadata"]["creationTimestamp"])
    assert first.metadata.generation == 1
    assert re.fullmatch(r"b-[a-z0-9]{5}", second.metadata.name)


def test_generation_counts_only_changes_of_the_spec(widgets):
    def generation() -> int:
        obj = widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")
        return int(obj["metadata"]["generation"])

    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x", size=1))
    seen = [generation()]
    widgets.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "x", {"metadata": {"labels": {"a": "b"}}}
    )
    seen.append(generation())
    widgets.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "x", {"status": {"phase": "Up"}}
    )
    seen.append(generation())
    widgets.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x", {"spec": {"size": 2}})
    seen.append(generation())
    widgets.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x", widget("x", size=3))
    seen.append(generation())

    assert seen == [1, 1, 1, 2, 3]


# The status subresource.


def test_the_main_resource_ignores_status_and_status_changes_only_status(widgets):
    created = widgets.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, widget("x") | {"status": {"phase": "Forged"}}
    )
    widgets.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "x", {"status": {"phase": "Forged"}}
    )
    after_main = widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")
    widgets.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "x",
        {"spec": {"size": 9}, "metadata": {"labels": {"a": "b"}}, "status": {"phase": "Up"}},
    )
    after_status = widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")

    assert "status" not in created
    assert "status" not in after_main
    assert after_status["status"] == {"phase": "Up"}
    assert after_status["spec"] == {"size": 3}
    assert "labels" not in after_status["metadata"]


def test_put_on_status_and_main_resource_keep_to_their_parts(widgets):
    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x"))
    current = widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")
    widgets.replace_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "x", current | {"spec": {"size": 5}, "status": {"phase": "Up"}}
    )
    current = widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")
    widgets.replace_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "x", current | {"spec": {"size": 6}, "status": {"phase": "Down"}}
    )

    final = widgets.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "x")
    assert (final["spec"], final["status"]) == ({"size": 6}, {"phase": "Up"})


def test_a_resource_without_a_status_subresource_has_no_status_url(local_api, core):
    core.create_namespaced_config_map("default", configmap("a"))

    code, status = request_json(
        "PATCH",
        f"{local_api.url}/api/v1/namespaces/default/configmaps/a/status",
        {"data": {"k": "x"}},
        content_type="application/merge-patch+json",
    )

    assert (code, status["reason"]) == (404, "NotFound")


# Writes: optimistic concurrency, patches, PUT.


def test_a_write_with_a_stale_resource_version_is_a_conflict(core):
    stale = core.create_namespaced_config_map("default", configmap("a"))
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "newer"}})

    with pytest.raises(ApiException) as replaced:
        core.replace_namespaced_config_map("a", "default", stale)
    with pytest.raises(ApiException) as patched:
        core.patch_namespaced_config_map(
            "a", "default", {"metadata": {"resourceVersion": stale.metadata.resource_version}}
        )
    current = core.read_namespaced_config_map("a", "default")
    core.replace_namespaced_config_map("a", "default", current)

    assert (replaced.value.status, error_reason(replaced.value)) == (409, "Conflict")
    assert (patched.value.status, error_reason(patched.value)) == (409, "Conflict")
    assert core.read_namespaced_config_map("a", "default").data == {"k": "newer"}


def test_a_failed_json_patch_test_is_unprocessable_not_a_server_error(core):
    created = core.create_namespaced_config_map("default", configmap("a"))
    version = created.metadata.resource_version
    failing = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "remove", "path": "/data"},
    ]
    passing = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "remove", "path": "/data"},
    ]

    with pytest.raises(ApiException) as rejected:
        core.patch_namespaced_config_map("a", "default", failing)
    applied = core.patch_namespaced_config_map("a", "default", passing)

    assert (rejected.value.status, error_reason(rejected.value)) == (422, "Invalid")
    assert applied.data is None


def test_a_merge_patch_null_deletes_and_a_scalar_replaces_a_map(local_api, widgets):
    widgets.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, widget("x") | {"spec": {"size": 1, "a": {"b": 1}}}
    )
    url = f"{local_api.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/x"

    code, patched = request_json(
        "PATCH", url, {"spec": {"size": None, "a": 5}}, content_type="application/merge-patch+json"
    )

    assert code == 200
    assert patched["spec"] == {"a": 5}


def test_a_strategic_merge_patch_is_refused_for_custom_resources(local_api, widgets):
    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x"))
    url = f"{local_api.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/x"

    code, status = request_json(
        "PATCH", url, {"spec": {"size": 2}}, content_type="application/strategic-merge-patch+json"
    )

    assert (code, status["reason"]) == (415, "UnsupportedMediaType")


def test_put_replaces_the_whole_object(core):
    core.create_namespaced_config_map("default", configmap("a", labels={"old": "yes"}))

    replaced = core.replace_namespaced_config_map(
        "a", "default", {"metadata": {"name": "a"}, "data": {"new": "1"}}
    )

    assert replaced.data == {"new": "1"}
    assert replaced.metadata.labels is None
    assert replaced.metadata.uid == core.read_namespaced_config_map("a", "default").metadata.uid


def test_an_immutable_configmap_keeps_its_data_but_not_its_labels(core):
    core.create_namespaced_config_map("default", configmap("a") | {"immutable": True})

    with pytest.raises(ApiException) as changed:
        core.patch_namespaced_config_map("a", "default", {"data": {"k": "other"}})
    with pytest.raises(ApiException) as unfrozen:
        core.patch_namespaced_config_map("a", "default", {"immutable": False})
    labelled = core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"team": "shop"}}})

    assert (changed.value.status, error_reason(changed.value)) == (422, "Invalid")
    assert json.loads(changed.value.body)["message"] == (
        'ConfigMap "a" is invalid: data: Forbidden: field is immutable when `immutable` is set'
    )
    assert json.loads(unfrozen.value.body)["details"]["causes"][0]["field"] == "immutable"
    assert labelled.data == {"k": "v"} and labelled.metadata.labels == {"team": "shop"}
    core.delete_namespaced_config_map("a", "default")


def test_creating_an_existing_object_or_in_a_missing_namespace_fails(core):
    core.create_namespaced_config_map("default", configmap("a"))

    with pytest.raises(ApiException) as duplicate:
        core.create_namespaced_config_map("default", configmap("a"))
    with pytest.raises(ApiException) as nowhere:
        core.create_namespaced_config_map("nowhere", configmap("a"))

    assert (duplicate.value.status, error_reason(duplicate.value)) == (409, "AlreadyExists")
    assert (nowhere.value.status, json.loads(nowhere.value.body)["message"]) == (
        404,
        'namespaces "nowhere" not found',
    )


# Lists and selectors.


def test_lists_carry_kind_api_version_and_so_do_their_items(local_api, widgets, core):
    core.create_namespaced_config_map("default", configmap("a"))
    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x"))

    _, configmaps = request_json("GET", f"{local_api.url}/api/v1/configmaps")
    _, listed = request_json("GET", f"{local_api.url}/apis/{GROUP}/{VERSION}/{PLURAL}")

    assert (configmaps["kind"], configmaps["apiVersion"]) == ("ConfigMapList", "v1")
    assert (listed["kind"], listed["apiVersion"]) == ("WidgetList", f"{GROUP}/{VERSION}")
    assert [(i["kind"], i["apiVersion"]) for i in configmaps["items"] + listed["items"]] == [
        ("ConfigMap", "v1"),
        ("Widget", f"{GROUP}/{VERSION}"),
    ]


LABELLED = {
    "a": {"app": "web", "tier": "front"},
    "b": {"app": "web", "tier": "back"},
    "c": {"app": "db"},
    "d": {},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d"]),
        ("tier in (front, back)", ["a", "b"]),
        ("tier notin (front)", ["b", "c", "d"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c", "d"]),
        ("app=web,tier=front", ["a"]),
        ("app in (web,db),!tier", ["c"]),
    ],
)
def test_label_selectors_filter_lists(core, selector, expected):
    for name, labels in LABELLED.items():
        core.create_namespaced_config_map("default", configmap(name, labels=labels))

    listed = core.list_namespaced_config_map("default", label_selector=selector)

    assert [item.metadata.name for item in listed.items] == expected


def test_field_selectors_filter_lists_across_namespaces(core):
    core.create_namespace({"metadata": {"name": "other"}})
    for namespace in ("default", "other"):
        for name in ("a", "b"):
            core.create_namespaced_config_map(namespace, configmap(name))

    def listed(selector: str) -> list[tuple[str, str]]:
        items = core.list_config_map_for_all_namespaces(field_selector=selector).items
        return [(i.metadata.namespace, i.metadata.name) for i in items]

    assert listed("metadata.name=a") == [("default", "a"), ("other", "a")]
    assert listed("metadata.namespace==other,metadata.name!=a") == [("other", "b")]


def test_an_invalid_selector_is_a_bad_request(local_api):
    code, status = request_json("GET", f"{local_api.url}/api/v1/configmaps?labelSelector=a%20in%20b")

    assert (code, status["reason"]) == (400, "BadRequest")


# Watches.


def test_a_watch_list_streams_json_then_the_initial_events_end_bookmark(local_api, core):
    core.create_namespaced_config_map("default", configmap("a"))
    _, listed = request_json("GET", f"{local_api.url}/api/v1/configmaps")
    url = f"{local_api.url}/api/v1/configmaps?watch=true&sendInitialEvents=true&timeoutSeconds=1"

    with urllib.request.urlopen(url, timeout=10) as response:
        content_type = response.headers["Content-Type"]
        events = [json.loads(line) for line in response]

    assert content_type == "application/json"
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "a"),
        ("BOOKMARK", None),
    ]
    bookmark = events[1]["object"]["metadata"]
    assert bookmark == {
        "resourceVersion": listed["metadata"]["resourceVersion"],
        "annotations": {"k8s.io/initial-events-end": "true"},
    }


def test_a_watch_ends_when_its_timeout_passes(local_api):
    started = time.monotonic()

    events = list(stream_events(f"{local_api.url}/api/v1/configmaps?watch=true&timeoutSeconds=1"))

    assert events == []
    assert 0.9 < time.monotonic() - started < 5


def test_a_watch_from_a_resource_version_replays_only_later_changes(local_api, core):
    core.create_namespaced_config_map("default", configmap("old"))
    since = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", configmap("new"))
    core.patch_namespaced_config_map("old", "default", {"data": {"k": "changed"}})

    url = f"{local_api.url}/api/v1/configmaps?watch=true&resourceVersion={since}&timeoutSeconds=1"
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in stream_events(url)]

    assert events == [("ADDED", "new"), ("MODIFIED", "old")]


@pytest.mark.local_api(retained_changes=2)
def test_a_watch_from_a_forgotten_resource_version_is_expired(local_api, core):
    since = core.list_namespaced_config_map("default").metadata.resource_version
    for name in ("a", "b", "c"):
        core.create_namespaced_config_map("default", configmap(name))

    events = list(stream_events(f"{local_api.url}/api/v1/configmaps?watch=true&resourceVersion={since}"))

    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [
        ("ERROR", 410, "Expired")
    ]


def test_a_selective_watch_sees_objects_enter_and_leave_its_selection(local_api, core):
    url = f"{local_api.url}/api/v1/configmaps?watch=true&labelSelector=app%3Dweb&timeoutSeconds=5"
    events = watch_in_background(url)
    wait_until(lambda: local_api.emulator.open_watches, message="the watch to open")

    core.create_namespaced_config_map("default", configmap("other", labels={"app": "db"}))
    core.create_namespaced_config_map("default", configmap("web", labels={"app": "web"}))
    core.patch_namespaced_config_map("other", "default", {"metadata": {"labels": {"app": "web"}}})
    core.patch_namespaced_config_map("web", "default", {"metadata": {"labels": {"app": "db"}}})
    core.delete_namespaced_config_map("web", "default")
    core.delete_namespaced_config_map("other", "default")

    wait_until(lambda: len(events) >= 4, message="four events")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "web"),
        ("ADDED", "other"),
        ("DELETED", "web"),
        ("DELETED", "other"),
    ]


def test_a_watch_by_field_selector_follows_one_object(local_api, core):
    url = f"{local_api.url}/api/v1/configmaps?watch=true&fieldSelector=metadata.name%3Db&timeoutSeconds=5"
    events = watch_in_background(url)
    wait_until(lambda: local_api.emulator.open_watches, message="the watch to open")

    for name in ("a", "b"):
        core.create_namespaced_config_map("default", configmap(name))
        core.patch_namespaced_config_map(name, "default", {"data": {"k": "changed"}})

    wait_until(lambda: len(events) >= 2, message="two events")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "b"),
    ]


# Deletion: finalizers and garbage collection.


def test_finalizers_hold_a_deletion_until_they_are_removed(core):
    core.create_namespaced_config_map("default", configmap("a", finalizers=["example.shepherd.dev/hold"]))

    core.delete_namespaced_config_map("a", "default")
    held = core.read_namespaced_config_map("a", "default")
    core.patch_namespaced_config_map("a", "default", {"metadata": {"finalizers": None}})

    assert held.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("a", "default")
    assert gone.value.status == 404


def test_deleting_an_owner_collects_its_dependents_recursively(kube_client, core):
    def owned_by(obj: Any) -> dict[str, Any]:
        reference = {
            "apiVersion": obj.api_version,
            "kind": obj.kind,
            "name": obj.metadata.name,
            "uid": obj.metadata.uid,
        }
        return {"ownerReferences": [reference]}

    owner = AppsV1Api(kube_client).create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "a", "image": "a"}]},
                },
            },
        },
    )
    child = core.create_namespaced_config_map("default", configmap("child", **owned_by(owner)))
    core.create_namespaced_config_map("default", configmap("grandchild", **owned_by(child)))
    keeper = core.create_namespaced_config_map("default", configmap("keeper"))
    shared = owned_by(owner)["ownerReferences"] + owned_by(keeper)["ownerReferences"]
    core.create_namespaced_config_map("default", configmap("shared", ownerReferences=shared))

    AppsV1Api(kube_client).delete_namespaced_deployment("web", "default")

    def remaining() -> list[str]:
        return [item.metadata.name for item in core.list_namespaced_config_map("default").items]

    wait_until(lambda: remaining() == ["keeper", "shared"], message="only the dependents with an owner left")


def test_deleting_a_namespace_deletes_its_content(core):
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_config_map("team", configmap("a"))

    core.delete_namespace("team")

    wait_until(
        lambda: not core.list_config_map_for_all_namespaces().items, message="the namespace content to go"
    )


def test_deleting_a_crd_stops_serving_its_resource_and_deletes_its_objects(
    local_api, widgets, kube_client, crd_file
):
    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x"))

    kubernetes.client.ApiextensionsV1Api(kube_client).delete_custom_resource_definition(f"{PLURAL}.{GROUP}")
    listing, _ = request_json("GET", f"{local_api.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}")
    discovery, _ = request_json("GET", f"{local_api.url}/apis/{GROUP}/{VERSION}")
    install_crds(local_api.url, [crd_file])

    assert (listing, discovery) == (404, 404)
    wait_until(
        lambda: not widgets.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"],
        message="the widgets of the deleted CRD to go",
    )


# Server-side printing.


def test_get_as_table_renders_printer_columns_and_the_row_objects(local_api, widgets):
    widgets.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("x", size=4))
    status = {
        "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}
    }
    widgets.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "x", status)
    url = f"{local_api.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"

    _, partial = request_json("GET", url, accept=TABLE)
    _, full = request_json("GET", f"{url}/x?includeObject=Object", accept=TABLE)

    assert (partial["kind"], partial["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in partial["columnDefinitions"]] == ["Name", "Size", "Ready", "Age"]
    name, size, ready, age = partial["rows"][0]["cells"]
    assert (name, size, ready) == ("x", 4, "True")
    assert re.fullmatch(r"\d+s", age)
    assert partial["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert full["rows"][0]["object"]["spec"] == {"size": 4}


def test_built_in_resources_print_as_name_and_age(local_api, core):
    core.create_namespaced_config_map("default", configmap("a"))

    _, printed = request_json("GET", f"{local_api.url}/api/v1/namespaces/default/configmaps", accept=TABLE)

    assert [c["name"] for c in printed["columnDefinitions"]] == ["Name", "Age"]
    assert printed["rows"][0]["cells"][0] == "a"


def test_a_secret_written_with_string_data_stores_it_base64_encoded_in_data(kubectl, core):
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token"},
        "data": {"user": "YWxpY2U="},
        "stringData": {"password": "s3cret"},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
    stored = json.loads(kubectl("get", "secret", "token", "-o", "json").stdout)
    assert stored["data"] == {"user": "YWxpY2U=", "password": "czNjcmV0"}
    assert "stringData" not in stored
