"""Story: the web frontend depends on its api backend (dependsOn); the api's canary is promoted before the
web's canary exists, and a rollback returns the web before the api. Order seen on a watch of Deployments."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from cluster import Cluster, quickstart_release

from helpers import stream_events, wait_until
from shepherd.lab.localapi import LocalAPIThread

HOLD = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}
WATCH_SECONDS = 120


def ordered_release(version: str, **spec: Any) -> dict[str, Any]:
    """The quickstart, with the web component depending on the api."""
    release = quickstart_release(version, **spec)
    web = next(c for c in release["spec"]["components"] if c["name"] == "web")
    web["dependsOn"] = ["api"]
    return release


class DeploymentLog:
    """Every change of the namespace's Deployments, in the order the API server sent them."""

    def __init__(self, local_api: LocalAPIThread) -> None:
        self.changes: list[tuple[str, str, str, int]] = []  # (event type, name, image, ready replicas)
        url = (
            f"{local_api.url}/apis/apps/v1/namespaces/default/deployments"
            f"?watch=true&timeoutSeconds={WATCH_SECONDS}"
        )
        watching = local_api.emulator.open_watches
        threading.Thread(target=self._follow, args=(url,), daemon=True).start()
        wait_until(lambda: local_api.emulator.open_watches > watching, message="the watch to be open")

    def _follow(self, url: str) -> None:
        for event in stream_events(url, timeout=WATCH_SECONDS):
            deployment = event["object"]
            image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            ready = (deployment.get("status") or {}).get("readyReplicas") or 0
            self.changes.append(
                (event["type"], deployment["metadata"]["name"], image.rsplit(":", 1)[1], ready)
            )

    def first(self, what: str, event: str, name: str, version: str | None = None, ready: int = 0) -> int:
        """Where the first matching change is in the log; fails the test, naming `what`, if there is none."""
        for index, (kind, seen, image, replicas) in enumerate(self.changes):
            if (kind, seen) == (event, name) and version in (None, image) and replicas >= ready:
                return index
        raise AssertionError(f"never saw {what}: {self.changes}")


@pytest.mark.kubelet(delay=0.2)
def test_the_api_is_promoted_before_the_web_canary_exists(
    cluster: Cluster, local_api: LocalAPIThread
) -> None:
    cluster.apply(ordered_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    log = DeploymentLog(local_api)

    cluster.apply(ordered_release("1.1.0"))
    cluster.wait_phase("Succeeded", revision=2)

    order = [
        log.first("the api canary", "ADDED", "shop-api-canary"),
        log.first("the api's stable on 1.1.0, ready", "MODIFIED", "shop-api", "1.1.0", ready=4),
        log.first("the api canary removed", "DELETED", "shop-api-canary"),
        log.first("the web canary", "ADDED", "shop-web-canary"),
        log.first("the web's stable on 1.1.0", "MODIFIED", "shop-web", "1.1.0"),
    ]
    assert order == sorted(order), log.changes
    assert set(cluster.images().values()) == {
        "ghcr.io/example/shop-api:1.1.0",
        "ghcr.io/example/shop-web:1.1.0",
    }
    waves = {e["message"] for e in cluster.events() if e["reason"] == "Wave"}
    assert (
        "revision 2: wave 1/2 (api) completed its steps: promoting it; "
        "wave 2/2 (web) starts its canary once it is ready"
    ) in waves, waves


def test_a_first_revision_deploys_the_api_before_the_web(cluster: Cluster, local_api: LocalAPIThread) -> None:
    log = DeploymentLog(local_api)
    cluster.apply(ordered_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    api_ready = log.first("the api ready", "MODIFIED", "shop-api", "1.0.0", ready=4)
    assert api_ready < log.first("the web created", "ADDED", "shop-web"), log.changes


def test_aborting_the_web_wave_returns_the_web_before_the_api(
    cluster: Cluster, local_api: LocalAPIThread
) -> None:
    cluster.apply(ordered_release("1.0.0", **HOLD))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(ordered_release("1.1.0", **HOLD))
    status = cluster.wait_phase("Paused", revision=2)
    assert status["wave"] == 0 and status["message"].startswith("paused at wave 1/2 (api), step 2/2")
    assert "shop-web-canary" not in cluster.replicas()

    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/promote=true")
    status = cluster.wait_status(
        "the web's canary to pause", lambda s: s.get("wave") == 1 and s["phase"] == "Paused"
    )
    assert status["message"].startswith("paused at wave 2/2 (web), step 2/2, canary at 50%")
    assert cluster.images()["shop-api"] == "ghcr.io/example/shop-api:1.1.0"
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 1, "shop-web-canary": 1}

    log = DeploymentLog(local_api)
    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    cluster.wait_phase("RolledBack", revision=2)
    web_back = log.first("the web canary removed", "DELETED", "shop-web-canary")
    api_back = log.first("the api back on 1.0.0", "MODIFIED", "shop-api", "1.0.0")
    assert web_back < api_back, log.changes
    assert set(cluster.images().values()) == {
        "ghcr.io/example/shop-api:1.0.0",
        "ghcr.io/example/shop-web:1.0.0",
    }
