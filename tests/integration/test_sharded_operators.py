"""Story: two operators, shards 0 and 1 of 2, on one API; each acts only on its own Releases.

Each operator talks to the API with its own token, so the local API's request log tells who made each call.
Both run Kopf and watch every Release, and neither writes anything about another shard's Release, not even
to the Release itself: no finalizer is needed, so none is put on a Release for the shards to fight over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import kmock
import pytest
from cluster import Cluster, quickstart_release

from helpers import wait_until
from shepherd.kube import KubeAPI, ReleaseKey, load_configuration
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread, write_kubeconfig
from shepherd.runner import OperatorOptions, OperatorThread
from shepherd.sharding import Shard

SHARDS = 2
CANDIDATES = ("apple", "berry", "cherry", "damson", "elder", "fig", "grape", "hazel", "kiwi", "lemon", "lime")
# Three Releases of each shard; no dashes in their names: a child's name, <release>-<component>, tells its
# Release.
OWNED = {
    index: [name for name in CANDIDATES if Shard(index, SHARDS).owns("default", name)][:3]
    for index in range(SHARDS)
}
OWNER = {name: f"shard-{index}" for index, names in OWNED.items() for name in names}


def release_named(request: kmock.Request) -> str | None:
    """The Release a request concerns: by its name, its child's name or its Event's object."""
    body: dict[str, Any] = request.data if isinstance(request.data, dict) else {}
    if request.resource is None or not request.resource.plural:
        return None
    if request.resource.plural == "events":
        return str((body.get("involvedObject") or {}).get("name") or "") or None
    name = request.name or (body.get("metadata") or {}).get("name")
    if not name:
        return None
    return str(name) if request.resource.plural == "releases" else str(name).split("-")[0]


def writes(local_api: LocalAPIThread, since: int = 0) -> list[tuple[str, str, kmock.Request]]:
    """(shard, Release, request) of every write a shard sent about a Release, from the `since`-th on."""
    found = []
    for request in list(local_api.emulator)[since:]:
        who = request.headers.get("Authorization", "").removeprefix("Bearer token-")
        release = release_named(request)
        if who.startswith("shard-") and release is not None and str(request.method.value) != "GET":
            found.append((who, release, request))
    return found


def conditional_status_write(request: kmock.Request) -> bool:
    body: dict[str, Any] = request.data if isinstance(request.data, dict) else {}
    return (
        request.subresource == "status"
        and str(request.method.value) == "PATCH"
        and bool((body.get("metadata") or {}).get("resourceVersion"))
    )


@pytest.fixture
def cluster(local_api: LocalAPIThread, kubectl: object, kubelet: KubeletSimulator) -> Iterator[Cluster]:
    """The cluster of the story, without the suite's own operator: the two shards are the operators."""
    api = KubeAPI(load_configuration(str(local_api.kubeconfig_path)))
    yield Cluster(kubectl, api)  # type: ignore[arg-type]
    api.close()


def test_two_shards_split_the_releases_and_each_acts_only_on_its_own(
    cluster: Cluster, local_api: LocalAPIThread, tmp_path: Path
) -> None:
    assert [len(names) for names in OWNED.values()] == [3, 3]
    with ExitStack() as stack:
        for index in range(SHARDS):
            who = f"shard-{index}"
            kubeconfig = write_kubeconfig(tmp_path / who, local_api.url, users={f"token-{who}": who})
            options = OperatorOptions(resync_seconds=300, standalone=True, shard=Shard(index, SHARDS))
            stack.enter_context(OperatorThread(load_configuration(str(kubeconfig), who), options))

        for name in OWNER:
            release = quickstart_release("1.0.0")
            release["metadata"]["name"] = name
            cluster.apply(release)
        for name in OWNER:
            cluster.wait_phase("Succeeded", name=name, revision=1)

        acted = {(who, release) for who, release, _request in writes(local_api)}
        assert acted == {(who, name) for name, who in OWNER.items()}, (
            "each Release's status, children and Events come from its own shard, and nothing else"
        )
        finalized = {name: cluster.release(name)["metadata"].get("finalizers") for name in OWNER}
        assert not any(finalized.values()), finalized

        assert any(conditional_status_write(request) for _, _, request in writes(local_api)), (
            "the shards write each status on the condition of the resourceVersion it was decided on"
        )

        deleted = len(list(local_api.emulator))
        gone = [OWNED[0][0], OWNED[1][0]]
        cluster.kubectl("delete", "release", *gone, "--wait=false")
        wait_until(
            lambda: all(cluster.api.get_release(ReleaseKey("default", name)) is None for name in gone),
            timeout=30,
            message="the deleted Releases to go, waiting for no operator",
        )
        after = [
            (who, release, request) for who, release, request in writes(local_api, deleted) if release in gone
        ]
        # A pass may decide on its cached copy just before the watch tells of the deletion. Its status write
        # is conditional on that copy's resourceVersion, so the API refuses it, and nothing follows it.
        assert all(conditional_status_write(request) for _, _, request in after), [
            (who, release, request.method.value, request.url) for who, release, request in after
        ]
