"""The local API emulator against the real kube-apiserver: the same calls, the same answers.

Each check makes calls a client of ours relies on and returns what it observed, in plain data; the check
runs on both servers and the observations must be equal. A difference is a bug of the emulator (fix it,
or drop what it emulates): the real server decides what is correct.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from shepherd import crdschema
from shepherd.lab.cluster import InstalledChart
from shepherd.lab.localapi import LocalAPIThread, install_crds
from story import quickstart_release

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
GROUP, VERSION = "shepherd.dev", "v1alpha1"
Observation = Any


class Server:
    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.core: Any = kubernetes.client.CoreV1Api(client)
        self.custom: Any = kubernetes.client.CustomObjectsApi(client)

    def json(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Content-Type": content_type or "application/json", "Accept": "application/json"}
        request = self.client.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.client.call_api(*request)
        response.read()
        if response.status >= 400:
            raise kubernetes.client.ApiException(http_resp=response)
        return json.loads(response.data)

    def status_of(self, call: Callable[[], object]) -> int:
        try:
            call()
        except kubernetes.client.ApiException as error:
            return int(error.status)
        return 200


@pytest.fixture(scope="module")
def local_server() -> Iterator[kubernetes.client.ApiClient]:
    with LocalAPIThread(validate_custom_object=crdschema.validate) as api:
        install_crds(api.url, sorted(CRD_DIR.glob("*.yaml")))
        client = kubernetes.config.new_client_from_config(config_file=str(api.kubeconfig_path))
        with client:
            yield client


@pytest.fixture
def servers(
    local_server: kubernetes.client.ApiClient, admin: kubernetes.client.ApiClient, chart: InstalledChart
) -> Iterator[tuple[Server, Server]]:
    """The emulator and the real server (its CRDs installed by the chart), each with a new namespace."""
    namespace = f"conformance-{uuid.uuid4().hex[:6]}"
    pair = (Server(local_server, namespace), Server(admin, namespace))
    for server in pair:
        server.core.create_namespace({"metadata": {"name": namespace}})
    yield pair
    for server in pair:
        server.core.delete_namespace(namespace)


def release(server: Server, **metadata: Any) -> dict[str, Any]:
    body = quickstart_release("1.0.0")
    body["metadata"] = {"name": "shop", "namespace": server.namespace, **metadata}
    return body


def create_release(server: Server, body: dict[str, Any] | None = None) -> dict[str, Any]:
    created: dict[str, Any] = server.custom.create_namespaced_custom_object(
        GROUP, VERSION, server.namespace, "releases", body or release(server)
    )
    return created


def check_create_ignores_status_and_starts_at_generation_1(server: Server) -> Observation:
    body = release(server)
    body["status"] = {"phase": "Succeeded"}
    created = create_release(server, body)
    return {"status": created.get("status"), "generation": created["metadata"]["generation"]}


def check_generation_counts_spec_changes_only(server: Server) -> Observation:
    create_release(server)
    seen = []
    patches = [
        ("spec", {"spec": {"paused": True}}),
        ("label", {"metadata": {"labels": {"team": "shop"}}}),
        ("annotation", {"metadata": {"annotations": {"shepherd.dev/promote": "true"}}}),
    ]
    for what, patch in patches:
        patched = server.custom.patch_namespaced_custom_object(
            GROUP, VERSION, server.namespace, "releases", "shop", patch
        )
        seen.append((what, patched["metadata"]["generation"]))
    status = server.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, server.namespace, "releases", "shop", {"status": {"phase": "Pending"}}
    )
    seen.append(("status", status["metadata"]["generation"]))
    return seen


def check_a_status_write_keeps_the_spec_and_a_spec_write_keeps_the_status(server: Server) -> Observation:
    create_release(server)
    written = server.custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        server.namespace,
        "releases",
        "shop",
        {"spec": {"version": "9.9.9"}, "status": {"phase": "Pending", "observedGeneration": 1}},
    )
    replaced = copy.deepcopy(written)
    replaced["status"] = {"phase": "Failed"}
    replaced["spec"]["paused"] = True
    after = server.custom.replace_namespaced_custom_object(
        GROUP, VERSION, server.namespace, "releases", "shop", replaced
    )
    return {
        "version after status write": written["spec"]["version"],
        "status after status write": written["status"],
        "status after spec write": after["status"],
        "paused": after["spec"].get("paused"),
    }


def check_a_stale_resource_version_is_a_conflict(server: Server) -> Observation:
    created = create_release(server)
    server.custom.patch_namespaced_custom_object(
        GROUP, VERSION, server.namespace, "releases", "shop", {"spec": {"paused": True}}
    )
    stale = copy.deepcopy(created)
    stale["spec"]["paused"] = False
    replace = server.status_of(
        lambda: server.custom.replace_namespaced_custom_object(
            GROUP, VERSION, server.namespace, "releases", "shop", stale
        )
    )
    patch = server.status_of(
        lambda: server.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            server.namespace,
            "releases",
            "shop",
            {
                "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                "spec": {"paused": False},
            },
        )
    )
    return {"replace": replace, "merge patch naming the old version": patch}


def check_merge_patch_replaces_lists_and_null_deletes(server: Server) -> Observation:
    create_release(server)
    patched = server.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        server.namespace,
        "releases",
        "shop",
        {"spec": {"postRelease": None, "strategy": {"canary": {"steps": [{"setWeight": 10}]}}}},
    )
    return {"postRelease" in patched["spec"], json.dumps(patched["spec"]["strategy"]["canary"]["steps"])}


def check_a_failed_json_patch_test_is_unprocessable(server: Server) -> Observation:
    create_release(server)
    patch = [{"op": "test", "path": "/spec/version", "value": "0.0.1"}]

    def call() -> object:
        return server.json(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/{server.namespace}/releases/shop",
            patch,
            "application/json-patch+json",
        )

    return server.status_of(call)


def check_an_immutable_config_map_keeps_its_data(server: Server) -> Observation:
    config = {"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": True}
    server.core.create_namespaced_config_map(server.namespace, config)
    changed = server.status_of(
        lambda: server.core.patch_namespaced_config_map("frozen", server.namespace, {"data": {"a": "2"}})
    )
    labelled = server.status_of(
        lambda: server.core.patch_namespaced_config_map(
            "frozen", server.namespace, {"metadata": {"labels": {"x": "y"}}}
        )
    )
    return {"data change": changed, "label change": labelled}


def check_string_data_is_stored_as_data(server: Server) -> Observation:
    server.core.create_namespaced_secret(
        server.namespace, {"metadata": {"name": "token"}, "stringData": {"token": "s3cret"}}
    )
    secret = server.json("GET", f"/api/v1/namespaces/{server.namespace}/secrets/token")
    return {"data": secret.get("data"), "stringData kept": "stringData" in secret}


def check_selectors_filter_lists(server: Server) -> Observation:
    for name, team in (("a", "shop"), ("b", "billing")):
        server.core.create_namespaced_config_map(
            server.namespace, {"metadata": {"name": name, "labels": {"team": team}}}
        )
    by_label = server.core.list_namespaced_config_map(server.namespace, label_selector="team=shop")
    by_name = server.core.list_namespaced_config_map(server.namespace, field_selector="metadata.name=b")
    return sorted(c.metadata.name for c in by_label.items), sorted(c.metadata.name for c in by_name.items)


def check_a_list_has_a_kind_and_a_resource_version(server: Server) -> Observation:
    listed = server.json("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{server.namespace}/releases")
    return listed["kind"], listed["apiVersion"], bool(listed["metadata"].get("resourceVersion"))


def check_a_watch_from_a_version_sees_only_later_changes(server: Server) -> Observation:
    server.core.create_namespaced_config_map(server.namespace, {"metadata": {"name": "before"}})
    listed = server.core.list_namespaced_config_map(server.namespace)
    server.core.create_namespaced_config_map(server.namespace, {"metadata": {"name": "after"}})
    seen = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(
        server.core.list_namespaced_config_map,
        server.namespace,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=2,
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "after":
            watch.stop()
    return seen


def check_unknown_fields_are_refused_when_strict_and_dropped_otherwise(server: Server) -> Observation:
    body = release(server)
    body["spec"]["colour"] = "blue"
    strict = server.status_of(
        lambda: server.custom.create_namespaced_custom_object(
            GROUP, VERSION, server.namespace, "releases", body, field_validation="Strict"
        )
    )
    created = server.custom.create_namespaced_custom_object(
        GROUP, VERSION, server.namespace, "releases", body
    )
    return {"strict": strict, "kept": "colour" in created["spec"]}


def check_dependents_are_garbage_collected(server: Server) -> Observation:
    owner = server.core.create_namespaced_config_map(server.namespace, {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    server.core.create_namespaced_config_map(
        server.namespace, {"metadata": {"name": "dependent", "ownerReferences": [reference]}}
    )
    server.core.delete_namespaced_config_map("owner", server.namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = {c.metadata.name for c in server.core.list_namespaced_config_map(server.namespace).items}
        if "dependent" not in names:
            return "collected"
        time.sleep(0.1)
    return "kept"


def check_a_missing_object_and_a_duplicate_are_404_and_409(server: Server) -> Observation:
    missing = server.status_of(lambda: server.core.read_namespaced_config_map("nothing", server.namespace))
    server.core.create_namespaced_config_map(server.namespace, {"metadata": {"name": "once"}})
    again = server.status_of(
        lambda: server.core.create_namespaced_config_map(server.namespace, {"metadata": {"name": "once"}})
    )
    return missing, again


def check_secret_data_that_is_not_base64_is_refused(server: Server) -> Observation:
    return server.status_of(
        lambda: server.json(
            "POST",
            f"/api/v1/namespaces/{server.namespace}/secrets",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "data": {"k": "not base64!"}},
        )
    )


CHECKS = [value for name, value in sorted(globals().items()) if name.startswith("check_")]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_the_emulator_answers_as_the_real_server(
    servers: tuple[Server, Server], check: Callable[[Server], Observation]
) -> None:
    local, real = (check(server) for server in servers)
    assert local == real, f"local API: {local!r}; kube-apiserver: {real!r}"
