"""Stories on the real API server: a first release, a canary paused and promoted, an abort, a canary that
never becomes ready, garbage collection of what a Release owns."""

from __future__ import annotations

import json

from story import QUICKSTART, Story, quickstart_release


def test_first_release_succeeds_and_kubectl_wait_sees_it(story: Story) -> None:
    story.kubectl("apply", "-f", str(QUICKSTART))
    story.kubectl("wait", "--for=condition=Ready", "release/shop", "--timeout=90s")

    status = story.status()
    assert status["phase"] == "Succeeded"
    assert status["observedGeneration"] == story.release()["metadata"]["generation"]
    assert story.replicas() == {"shop-api": 4, "shop-web": 2}, "the first revision has no canary"
    # The real deployment controller counted the simulated pods ready.
    api = story.apps.read_namespaced_deployment_status("shop-api", story.namespace)
    assert api.status.ready_replicas == 4 and api.status.updated_replicas == 4
    story.wait_event("Succeeded")  # posted just after the status
    reasons = {e["reason"] for e in story.events()}
    assert {"NewRevision", "Progressing", "Baking", "Succeeded"} <= reasons


def test_canary_paused_then_promoted_with_kubectl_release(story: Story) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    steps = [{"setWeight": 25}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"pause": {}}]
    release = quickstart_release("1.1.0")
    release["spec"]["strategy"]["canary"]["steps"] = steps
    story.apply(release)

    paused = story.wait(
        "the indefinite pause", lambda s: s.get("phase") == "Paused" and s.get("currentStep") == 3
    )
    assert paused["canaryWeight"] == 50
    assert story.replicas() == {"shop-api": 2, "shop-api-canary": 2, "shop-web": 1, "shop-web-canary": 1}
    canary = story.apps.read_namespaced_deployment_status("shop-api-canary", story.namespace)
    assert canary.status.ready_replicas == 2, "the canary's pods are ready before the stable shrinks"
    shares = [
        (c["name"], c["canaryPods"], c["stablePods"], c["canaryShare"])
        for c in paused["traffic"]["components"]
    ]
    assert shares == [("api", 2, 2, 50), ("web", 1, 1, 50)], "status.traffic: each component's pods"
    assert "web: canary 50% of pods (1/2), asked 50%" in story.kubectl("release", "get", "shop").stdout

    story.kubectl("release", "promote", "shop")
    story.wait_phase("Succeeded", revision=2)
    assert "traffic" not in story.status(), "at rest the status holds no traffic"
    assert story.images() == {
        "shop-api": "ghcr.io/example/shop-api:1.1.0",
        "shop-web": "ghcr.io/example/shop-web:1.1.0",
    }
    assert story.replicas() == {"shop-api": 4, "shop-web": 2}, "the canaries are gone after promotion"
    history = story.status()["history"]
    assert [(h["revision"], h["result"]) for h in history] == [(1, "Succeeded"), (2, "Succeeded")]


def test_abort_mid_canary_returns_to_the_stable(story: Story) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    release = quickstart_release("1.1.0")
    release["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 50}, {"pause": {}}]
    story.apply(release)
    story.wait("the canary at 50%", lambda s: s.get("phase") == "Paused" and s.get("canaryWeight") == 50)

    story.kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    story.kubectl("wait", "--for=condition=Stalled", "release/shop", "--timeout=90s")
    status = story.status()
    assert status["phase"] == "RolledBack"
    assert story.images() == {
        "shop-api": "ghcr.io/example/shop-api:1.0.0",
        "shop-web": "ghcr.io/example/shop-web:1.0.0",
    }
    story.wait_until(
        "the stable back at full scale and ready",
        lambda: (
            story.apps.read_namespaced_deployment_status("shop-api", story.namespace).status.ready_replicas
            == 4
        ),
    )
    assert "shepherd.dev/abort" not in (story.release()["metadata"].get("annotations") or {})


def test_canary_that_never_gets_ready_is_rolled_back_at_its_progress_deadline(story: Story) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    broken = quickstart_release("1.1.0", progressDeadline="5s")
    for component in broken["spec"]["components"]:
        component["template"].setdefault("metadata", {}).setdefault("annotations", {})[
            "kubelet.shepherd.dev/behaviour"
        ] = "never-ready"
    story.apply(broken)

    final = story.wait_phase("RolledBack", revision=2)
    assert final["history"][-1]["reason"] == "ProgressDeadlineExceeded"
    assert story.images()["shop-api"] == "ghcr.io/example/shop-api:1.0.0"
    assert "shop-api-canary" not in story.replicas() or story.replicas()["shop-api-canary"] == 0


def test_deleting_a_release_removes_what_it_owns_by_garbage_collection(story: Story) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    owned = json.loads(story.kubectl("get", "deployments,controllerrevisions", "-o", "json").stdout)["items"]
    assert {o["metadata"]["name"] for o in owned} >= {"shop-api", "shop-web", "shop-1"}

    story.kubectl("delete", "release", "shop", "--wait=true")

    def gone() -> bool:
        left = json.loads(
            story.kubectl("get", "deployments,replicasets,pods,controllerrevisions", "-o", "json").stdout
        )
        return not left["items"]

    story.wait_until("the garbage collector to delete the Deployments, ReplicaSets, pods and revisions", gone)


def test_a_template_the_deployment_api_refuses_stalls_the_release_and_leaves_the_stable_running(
    story: Story,
) -> None:
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    bad = quickstart_release("1.1.0")
    # The Release's schema keeps pod templates open; the real Deployment API refuses this one.
    bad["spec"]["components"][0]["template"]["spec"]["containers"][0]["env"] = "LOG_LEVEL=debug"
    story.apply(bad)

    story.kubectl("wait", "--for=condition=Stalled", "release/shop", "--timeout=90s")
    stalled = next(c for c in story.status()["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "InvalidTemplate"
    assert "spec.template.spec.containers[0].env" in stalled["message"], stalled["message"]
    story.wait_event("InvalidTemplate")
    assert story.images() == {
        "shop-api": "ghcr.io/example/shop-api:1.0.0",
        "shop-web": "ghcr.io/example/shop-web:1.0.0",
    }, "what runs is untouched"
    assert story.replicas() == {"shop-api": 4, "shop-web": 2}

    story.apply(quickstart_release("1.2.0"))  # fixed in git: the next generation goes on
    status = story.wait_phase("Succeeded", revision=3)
    assert not any(c["type"] == "Stalled" for c in status["conditions"])
