"""The Gateway API on the real API server: the standard channel's CRDs, taken from the sigs.k8s.io/gateway-api
module pinned in controlplane/go.mod, are served at that version, accept a weighted HTTPRoute as Shepherd
writes them, and refuse, by their own schema and CEL rules, a route that breaks them, naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from shepherd.lab.controlplane import BUNDLE_VERSION_ANNOTATION, CHANNEL_ANNOTATION
from story import REPO, Kubectl

GROUP = "gateway.networking.k8s.io"


def pinned_version() -> str:
    for line in (REPO / "controlplane" / "go.mod").read_text().splitlines():
        words = line.split()
        if words[:1] == ["sigs.k8s.io/gateway-api"]:
            return words[1]
    raise AssertionError("controlplane/go.mod does not require sigs.k8s.io/gateway-api")


def route(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["shop.example"], "rules": rules},
    }


def weighted_rule(stable: int, canary: int) -> dict[str, Any]:
    return {
        "backendRefs": [
            {"name": "shop-stable", "port": 80, "weight": stable},
            {"name": "shop-canary", "port": 80, "weight": canary},
        ]
    }


def apply(kubectl: Kubectl, manifest: dict[str, Any], *, check: bool = True) -> str:
    result = kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=check)
    return result.stdout + result.stderr


def test_the_crds_are_served_at_the_pinned_version_of_the_standard_channel(
    admin: kubernetes.client.ApiClient, gateway_api_crds: Path
) -> None:
    version = pinned_version()
    assert (gateway_api_crds / "VERSION").read_text().split() == [
        "sigs.k8s.io/gateway-api",
        version,
        "standard",
    ]
    files = {
        document["metadata"]["name"]
        for path in gateway_api_crds.glob("*.yaml")
        for document in yaml.safe_load_all(Path(path).read_text())
        if document and document["kind"] == "CustomResourceDefinition"
    }
    assert {"gatewayclasses", "gateways", "httproutes", "referencegrants"} <= {n.split(".")[0] for n in files}

    extensions = kubernetes.client.ApiextensionsV1Api(admin)
    listed = json.loads(extensions.list_custom_resource_definition(_preload_content=False).data)["items"]
    served = {crd["metadata"]["name"]: crd for crd in listed if crd["spec"]["group"] == GROUP}
    assert set(served) == files
    for name, crd in served.items():
        annotations = crd["metadata"]["annotations"]
        assert annotations[BUNDLE_VERSION_ANNOTATION] == version, name
        assert annotations[CHANNEL_ANNOTATION] == "standard", name
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", name
    httproutes = served[f"httproutes.{GROUP}"]
    storage = [v["name"] for v in httproutes["spec"]["versions"] if v["storage"]]
    assert storage == ["v1"]
    assert httproutes["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_a_route_with_two_weighted_backends_and_a_header_rule_is_accepted(
    admin: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    header_rule = {
        "matches": [{"headers": [{"name": "X-Canary", "value": "always"}]}],
        "backendRefs": [{"name": "shop-canary", "port": 80}],
    }
    apply(kubectl, route("shop", [weighted_rule(80, 20), header_rule]))

    custom = kubernetes.client.CustomObjectsApi(admin)
    stored = custom.get_namespaced_custom_object(GROUP, "v1", namespace, "httproutes", "shop")
    rules = stored["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rules[0]["backendRefs"]] == [
        ("shop-stable", 80),
        ("shop-canary", 20),
    ]
    # The CRD's own defaults were applied: a rule without matches matches every path, a header match is Exact,
    # a backendRef is a core Service of weight 1.
    assert rules[0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rules[1]["matches"][0]["headers"] == [{"name": "X-Canary", "type": "Exact", "value": "always"}]
    assert rules[1]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "shop-canary", "port": 80, "weight": 1}
    ]
    assert stored["spec"]["parentRefs"] == [{"group": GROUP, "kind": "Gateway", "name": "edge"}]
    assert stored["metadata"]["generation"] == 1

    # A weight of 0 and the largest allowed one are both valid; the change of spec moves the generation.
    apply(kubectl, route("shop", [weighted_rule(0, 1_000_000), header_rule]))
    stored = custom.get_namespaced_custom_object(GROUP, "v1", namespace, "httproutes", "shop")
    assert [b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]] == [0, 1_000_000]
    assert stored["metadata"]["generation"] == 2


def test_the_crds_refuse_a_broken_route_naming_the_field(kubectl: Kubectl, namespace: str) -> None:
    negative = apply(kubectl, route("negative", [weighted_rule(-1, 20)]), check=False)
    assert "spec.rules[0].backendRefs[0].weight" in negative
    assert "greater than or equal to 0" in negative

    too_heavy = apply(kubectl, route("heavy", [weighted_rule(80, 1_000_001)]), check=False)
    assert "spec.rules[0].backendRefs[1].weight" in too_heavy
    assert "less than or equal to 1000000" in too_heavy

    seventeen = [
        {"matches": [{"headers": [{"name": "X-Rule", "value": str(i)}]}], **weighted_rule(100, 0)}
        for i in range(17)
    ]
    too_many = apply(kubectl, route("crowded", seventeen), check=False)
    assert "spec.rules" in too_many
    assert "must have at most 16 items" in too_many
    apply(kubectl, route("full", seventeen[:16]))

    # A CEL rule of the CRD: a backendRef to a Service must name its port.
    portless = route("portless", [{"backendRefs": [{"name": "shop-stable", "weight": 1}]}])
    no_port = apply(kubectl, portless, check=False)
    assert "spec.rules[0].backendRefs[0]" in no_port
    assert "Must have port for Service reference" in no_port

    listed = json.loads(kubectl("get", "httproutes", "-o", "json").stdout)["items"]
    assert [r["metadata"]["name"] for r in listed] == ["full"]
