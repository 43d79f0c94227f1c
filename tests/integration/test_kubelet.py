"""The simulated kubelet makes Deployments and Jobs behave as the controllers and a kubelet would."""

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from helpers import request_json, wait_until
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread, serve

ANNOTATION = "kubelet.shepherd.dev/behaviour"


def pod_template(behaviour: str | None, image: str = "app:1") -> dict[str, Any]:
    annotations = {ANNOTATION: behaviour} if behaviour else {}
    return {
        "metadata": {"labels": {"app": "web"}, "annotations": annotations},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": image}]},
    }


def deployment(name: str, replicas: int = 2, behaviour: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": pod_template(behaviour),
        },
    }


def job(name: str, behaviour: str | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": pod_template(behaviour), **spec},
    }


class Workloads:
    """Deployments and Jobs of the default namespace, read and written as plain JSON."""

    def __init__(self, api: LocalAPIThread) -> None:
        self.deployments = f"{api.url}/apis/apps/v1/namespaces/default/deployments"
        self.jobs = f"{api.url}/apis/batch/v1/namespaces/default/jobs"

    def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        code, created = request_json("POST", collection, body)
        assert code == 201, created
        return created

    def patch(self, collection: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        code, patched = request_json(
            "PATCH", f"{collection}/{name}", patch, content_type="application/merge-patch+json"
        )
        assert code == 200, patched
        return patched

    def get(self, collection: str, name: str) -> dict[str, Any]:
        code, found = request_json("GET", f"{collection}/{name}")
        assert code == 200, found
        return found

    def status_when(self, collection: str, name: str, **expected: Any) -> dict[str, Any]:
        """The status once it has the expected values (a `None` value: the field is absent)."""

        def matching() -> dict[str, Any] | None:
            status = self.get(collection, name).get("status") or {}
            return status if all(status.get(field) == value for field, value in expected.items()) else None

        found: dict[str, Any] = wait_until(matching, message=f"{name} to have the status {expected}")
        return found


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


@pytest.fixture
def workloads(local_api: LocalAPIThread) -> Workloads:
    return Workloads(local_api)


def test_a_deployment_becomes_ready_with_all_its_replicas(kubelet, workloads):
    workloads.create(workloads.deployments, deployment("web", replicas=3))

    status = workloads.status_when(workloads.deployments, "web", observedGeneration=1, readyReplicas=3)

    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 1,
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
    }
    assert conditions(status) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }


def test_a_deployment_follows_scaling_and_new_generations(kubelet, workloads):
    workloads.create(workloads.deployments, deployment("web", replicas=1))
    workloads.status_when(workloads.deployments, "web", observedGeneration=1, readyReplicas=1)

    workloads.patch(workloads.deployments, "web", {"spec": {"replicas": 4}})
    scaled = workloads.status_when(workloads.deployments, "web", observedGeneration=2, readyReplicas=4)
    workloads.patch(workloads.deployments, "web", {"spec": {"template": pod_template(None, image="app:2")}})
    updated = workloads.status_when(workloads.deployments, "web", observedGeneration=3)
    workloads.patch(workloads.deployments, "web", {"spec": {"replicas": 0}})
    emptied = workloads.status_when(workloads.deployments, "web", observedGeneration=4)

    assert (scaled["availableReplicas"], updated["readyReplicas"]) == (4, 4)
    assert [emptied.get(k) for k in ("replicas", "readyReplicas", "unavailableReplicas")] == [
        None,
        None,
        None,
    ]
    assert conditions(emptied)["Available"] == ("True", "MinimumReplicasAvailable")


def test_the_template_annotation_makes_a_deployment_never_ready(kubelet, workloads):
    workloads.create(workloads.deployments, deployment("web", replicas=2, behaviour="never-ready"))

    status = workloads.status_when(workloads.deployments, "web", observedGeneration=1, unavailableReplicas=2)

    assert [status.get(k) for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")] == [
        2,
        2,
        None,
        None,
    ]
    assert conditions(status) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("True", "ReplicaSetUpdated"),
    }


def test_a_new_version_whose_template_asks_to_crash_times_out_progressing(kubelet, workloads):
    workloads.create(workloads.deployments, deployment("web", replicas=2))
    workloads.status_when(workloads.deployments, "web", observedGeneration=1, readyReplicas=2)

    workloads.patch(
        workloads.deployments, "web", {"spec": {"template": pod_template("crash", image="app:2")}}
    )
    status = workloads.status_when(workloads.deployments, "web", observedGeneration=2, unavailableReplicas=2)

    assert status.get("readyReplicas") is None
    assert conditions(status) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("False", "ProgressDeadlineExceeded"),
    }


def test_a_runtime_override_wins_over_the_annotation_until_it_is_withdrawn(kubelet, workloads):
    kubelet.set_behaviour("default", "web", "crash")
    workloads.create(workloads.deployments, deployment("web", replicas=1, behaviour="never-ready"))

    crashing = workloads.status_when(
        workloads.deployments, "web", observedGeneration=1, unavailableReplicas=1
    )
    kubelet.set_behaviour("default", "web", "ready")
    ready = workloads.status_when(workloads.deployments, "web", readyReplicas=1)
    kubelet.set_behaviour("default", "web", None)
    annotated = workloads.status_when(workloads.deployments, "web", readyReplicas=None)

    assert conditions(crashing)["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert conditions(ready)["Available"] == ("True", "MinimumReplicasAvailable")
    assert conditions(annotated)["Progressing"] == ("True", "ReplicaSetUpdated")


def test_pods_naming_a_missing_configmap_wait_for_it_unless_it_is_optional(kubelet, workloads, local_api):
    needs = deployment("web", replicas=2)
    needs["spec"]["template"]["spec"]["volumes"] = [{"name": "c", "configMap": {"name": "web-config"}}]
    optional = deployment("tolerant", replicas=1)
    optional["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"configMapRef": {"name": "web-config", "optional": True}}
    ]
    workloads.create(workloads.deployments, needs)
    workloads.create(workloads.deployments, optional)

    waiting = workloads.status_when(workloads.deployments, "web", observedGeneration=1, unavailableReplicas=2)
    workloads.status_when(workloads.deployments, "tolerant", readyReplicas=1)
    configmaps = f"{local_api.url}/api/v1/namespaces/default/configmaps"
    workloads.create(configmaps, {"metadata": {"name": "web-config"}, "data": {"k": "v"}})
    started = workloads.status_when(workloads.deployments, "web", readyReplicas=2)

    assert conditions(waiting)["Available"] == ("False", "MinimumReplicasUnavailable")
    assert conditions(started)["Available"] == ("True", "MinimumReplicasAvailable")


def test_the_status_is_written_only_when_it_changes(kubelet, workloads, local_api):
    def status_writes(name: str) -> int:
        return sum(
            1
            for r in list(local_api.emulator)
            if (r.method, r.name, r.subresource) == ("PATCH", name, "status")
        )

    workloads.create(workloads.deployments, deployment("first", replicas=1))
    workloads.create(workloads.deployments, deployment("second", replicas=1))
    workloads.status_when(workloads.deployments, "first", readyReplicas=1)
    workloads.status_when(workloads.deployments, "second", readyReplicas=1)
    writes = status_writes("first")

    workloads.patch(workloads.deployments, "first", {"metadata": {"labels": {"seen": "yes"}}})
    # Events reach the simulator in order, one at a time: once it has handled the second deployment's
    # change, it has handled the first one's label change too.
    workloads.patch(workloads.deployments, "second", {"spec": {"template": pod_template("crash")}})
    workloads.status_when(workloads.deployments, "second", observedGeneration=2, unavailableReplicas=1)

    assert writes == 1
    assert status_writes("first") == writes


@pytest.mark.kubelet(delay=0.3)
def test_with_a_delay_a_deployment_is_progressing_before_it_is_ready(kubelet, workloads, local_api):
    workloads.create(workloads.deployments, deployment("web", replicas=2))

    workloads.status_when(workloads.deployments, "web", readyReplicas=2)

    history = local_api.emulator.objects["apps/v1/deployments", "default", "web"].history
    statuses = [dict(version["status"]) for version in history if version is not None and "status" in version]
    assert [(s.get("readyReplicas"), conditions(s)["Progressing"]) for s in statuses] == [
        (None, ("True", "ReplicaSetUpdated")),
        (2, ("True", "NewReplicaSetAvailable")),
    ]


def test_a_job_succeeds_by_default(kubelet, workloads):
    workloads.create(workloads.jobs, job("migrate", completions=2))

    status = workloads.status_when(workloads.jobs, "migrate", succeeded=2)

    assert status.get("active") is None
    assert "startTime" in status and "completionTime" in status
    assert conditions(status) == {
        "SuccessCriteriaMet": ("True", "CompletionsReached"),
        "Complete": ("True", "CompletionsReached"),
    }


def test_a_job_whose_template_asks_to_fail_fails_after_its_backoff_limit(kubelet, workloads):
    workloads.create(workloads.jobs, job("migrate", behaviour="fail", backoffLimit=2))

    status = workloads.status_when(workloads.jobs, "migrate", failed=3)

    assert status.get("succeeded") is None
    assert conditions(status) == {
        "FailureTarget": ("True", "BackoffLimitExceeded"),
        "Failed": ("True", "BackoffLimitExceeded"),
    }


def test_a_job_kept_running_finishes_when_told_to(kubelet, workloads):
    kubelet.set_behaviour("default", "migrate", "running", kind="Job")
    workloads.create(workloads.jobs, job("migrate"))

    running = workloads.status_when(workloads.jobs, "migrate", active=1)
    kubelet.set_behaviour("default", "migrate", "succeed", kind="Job")
    finished = workloads.status_when(workloads.jobs, "migrate", succeeded=1)

    assert running.get("conditions") is None
    assert conditions(finished)["Complete"] == ("True", "CompletionsReached")


def test_the_api_and_the_simulator_share_one_event_loop():
    async def scenario() -> dict[str, Any]:
        async with serve() as api, KubeletSimulator(api.url), aiohttp.ClientSession(api.url) as session:
            deployments = "/apis/apps/v1/namespaces/default/deployments"
            async with session.post(deployments, json=deployment("web", replicas=2)) as created:
                assert created.status == 201
            watch = {"watch": "true", "fieldSelector": "metadata.name=web", "timeoutSeconds": "10"}
            async with session.get(deployments, params=watch) as stream:
                async for line in stream.content:
                    status: dict[str, Any] = json.loads(line)["object"].get("status") or {}
                    if status.get("readyReplicas") == 2:
                        return status
        raise AssertionError("the deployment never became ready")

    status = asyncio.run(scenario())

    assert conditions(status)["Available"] == ("True", "MinimumReplicasAvailable")


def test_an_unknown_behaviour_is_refused(local_api):
    simulator = KubeletSimulator(local_api.url)

    with pytest.raises(ValueError, match="unknown behaviour 'succeed' of a Deployment"):
        simulator.set_behaviour("default", "web", "succeed")
