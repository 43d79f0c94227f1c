"""Every Release of the bad-Release corpus is rejected by the real API server at the field the corpus
names, and `shepherd lint` names the same field: a difference is a bug in the CRD, the offline validator
or the corpus. The CRDs themselves were accepted by `helm install` (structural schema, CEL cost budget)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from bad_releases import BAD_RELEASES, BadRelease, quickstart_release
from shepherd.lab.cluster import InstalledChart
from shepherd.lint import lint_documents

GROUP, VERSION = "shepherd.dev", "v1alpha1"


def rejection(error: kubernetes.client.ApiException) -> tuple[list[str], str]:
    """The fields the API server names in a 422, and its message."""
    body = json.loads(error.body)
    causes = (body.get("details") or {}).get("causes") or []
    return [c.get("field", "") for c in causes], body.get("message", "")


def test_the_chart_installed_the_three_crds(
    admin: kubernetes.client.ApiClient, chart: InstalledChart
) -> None:
    extensions = kubernetes.client.ApiextensionsV1Api(admin)
    for plural in ("releases", "releaseapprovals", "releasepolicies"):
        crd = extensions.read_custom_resource_definition(f"{plural}.{GROUP}")
        established = {c.type: c.status for c in crd.status.conditions}
        assert established.get("Established") == "True", plural
        assert established.get("NonStructuralSchema") is None, plural


@pytest.fixture(scope="module")
def corpus_namespace(admin: kubernetes.client.ApiClient) -> Iterator[str]:
    core = kubernetes.client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "bad-releases"}})
    yield "bad-releases"
    core.delete_namespace("bad-releases")


# A body that names another kind is judged by the API server only where no MutatingAdmissionPolicy matches
# Releases: with the chart's four-eyes policy the server takes it as a Release (see the test below); lint
# still refuses it (tests/unit/test_crdschema.py).
TAKEN_AS_A_RELEASE = "wrong-kind"
SERVER_CASES = [case for case in BAD_RELEASES if case.id != TAKEN_AS_A_RELEASE]


@pytest.mark.parametrize("case", SERVER_CASES, ids=[case.id for case in SERVER_CASES])
def test_a_bad_release_is_rejected_by_the_api_server_and_by_lint_at_the_same_field(
    admin: kubernetes.client.ApiClient, corpus_namespace: str, chart: InstalledChart, case: BadRelease
) -> None:
    namespace = corpus_namespace
    release: dict[str, Any] = quickstart_release()
    # A status case creates its Release for real: each under a name of its own. Dry runs keep "shop".
    name = case.id if case.field.startswith("status") else "shop"
    release["metadata"] = {"name": name, "namespace": namespace}
    custom = kubernetes.client.CustomObjectsApi(admin)
    broken = copy.deepcopy(release)
    case.mutate(broken)

    with pytest.raises(kubernetes.client.ApiException) as raised:
        if case.field.startswith("status"):
            # Status is written through its subresource: only there does the server judge it.
            created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "releases", release)
            broken["metadata"] = created["metadata"]
            custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, namespace, "releases", name, broken
            )
        else:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "releases", broken, dry_run="All", field_validation="Strict"
            )

    fields, message = rejection(raised.value)
    if case.server_field is None:
        # Strict field validation (kubectl's default) or an undecodable apiVersion: a 400, no causes.
        assert raised.value.status == 400, message
    else:
        assert raised.value.status == 422, message
        assert case.server_field in fields, (
            f"the API server named {fields}, the corpus {case.field}: {message}"
        )
    assert case.message in message, message

    linted = list(lint_documents([broken]))
    assert any(f": {case.field}: " in line for line in linted), (
        f"shepherd lint named other fields than the API server's {case.field}: {linted}"
    )


def test_a_body_of_another_kind_is_taken_as_a_release_under_the_four_eyes_policy(
    admin: kubernetes.client.ApiClient, corpus_namespace: str, chart: InstalledChart
) -> None:
    """kube-apiserver v1.37 refuses a Release body whose kind is not Release ("must be Release") unless a
    MutatingAdmissionPolicy matches Releases, as the chart's spec-author policy does: then it decodes the body
    at the endpoint's kind. Nothing else of it is let through (every other case above is still refused)."""
    release = quickstart_release()
    release["metadata"] = {"name": "shop", "namespace": corpus_namespace}
    (case,) = (c for c in BAD_RELEASES if c.id == TAKEN_AS_A_RELEASE)
    case.mutate(release)
    assert release["kind"] != "Release"
    created = kubernetes.client.CustomObjectsApi(admin).create_namespaced_custom_object(
        GROUP, VERSION, corpus_namespace, "releases", release, dry_run="All", field_validation="Strict"
    )
    assert created["kind"] == "Release"
    linted = list(lint_documents([release]))
    assert any(": kind: " in line and "must be Release" in line for line in linted), linted
