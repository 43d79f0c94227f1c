"""Story: the API server refuses a status write (here a ValidatingAdmissionPolicy on releases/status that
no Release may be Paused in this namespace). The Release turns Stalled, reason StatusRefused, with the
server's own message, written by a smaller write of the status as it was; and it is written once: later
passes hold the Release as it is instead of sending the refused write again."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from shepherd.lab.cluster import OperatorProcess
from shepherd.lab.faultproxy import FaultProxy
from story import Story, quickstart_release

REFUSAL = "no Release may be paused in this namespace"
STATUS_WRITES = r"/releases/shop/status$"


@pytest.fixture
def refusing_policy(admin: kubernetes.client.ApiClient, namespace: str) -> Iterator[None]:
    api = kubernetes.client.AdmissionregistrationV1Api(admin)
    name = f"refuse-paused-{namespace}"
    api.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["shepherd.dev"],
                            "apiVersions": ["*"],
                            "operations": ["UPDATE"],
                            "resources": ["releases/status"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.status.phase) || object.status.phase != 'Paused'",
                        "message": REFUSAL,
                    }
                ],
            },
        }
    )
    api.create_validating_admission_policy_binding(
        {
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }
    )
    yield
    api.delete_validating_admission_policy_binding(name)
    api.delete_validating_admission_policy(name)


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return ("--resync=1s",)


@pytest.fixture
def story(proxied_story: Story) -> Story:
    return proxied_story


def reconciles(operator: OperatorProcess) -> float:
    port = next(a.split("=", 1)[1] for a in operator.args if a.startswith("--metrics-port="))
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(r"^shepherd_reconcile_duration_seconds_count ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def policy_refuses(story: Story) -> bool:
    """Whether the admission policy is in force yet: a dry run of the write it must refuse."""
    try:
        story.custom.patch_namespaced_custom_object_status(
            "shepherd.dev",
            "v1alpha1",
            story.namespace,
            "releases",
            "shop",
            {"status": {"phase": "Paused"}},
            dry_run="All",
        )
    except ApiException as error:
        return error.status == 422 and REFUSAL in str(error.body)
    return False


def test_a_status_write_the_api_server_refuses_stalls_the_release_once(
    story: Story, fault_proxy: FaultProxy, refusing_policy: None
) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    story.wait_until("the admission policy to be in force", lambda: policy_refuses(story))
    paused = quickstart_release("1.1.0")
    paused["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 25}, {"pause": {}}]
    story.apply(paused)

    story.kubectl("wait", "--for=condition=Stalled", "release/shop", "--timeout=90s")
    status = story.status()
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "StatusRefused"
    assert REFUSAL in stalled["message"], stalled["message"]
    assert status["rejected"]["reason"] == "StatusRefused" and status["rejected"]["code"] == 422
    assert status["phase"] != "Paused", "the refused status is not what the server holds"
    story.wait_event("StatusRefused")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"

    refused = fault_proxy.count("PATCH", STATUS_WRITES)
    counted = reconciles(story.operator)
    story.wait_until("three more passes (resync 1s)", lambda: reconciles(story.operator) >= counted + 3)
    assert fault_proxy.count("PATCH", STATUS_WRITES) == refused, "a held Release sent its status again"
    answered = [
        e.status for e in fault_proxy.exchanges if re.search(STATUS_WRITES, e.path) and e.status == 422
    ]
    assert answered == [422], "the refused write was sent once"

    fixed = quickstart_release("1.2.0")
    fixed["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 25}]
    story.apply(fixed)
    story.wait_phase("Succeeded", revision=3)
    assert "Stalled" not in {c["type"] for c in story.status()["conditions"]}
