"""Story: the operator's cache follows the API server through lists, watches, cut watches and expiry.

An informer lists once, then follows changes; a cut watch resumes from the last version without a new
list; a version too old to resume from (410) lists again; a resource that is not served is empty (and
ready) rather than blocking the operator's start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from helpers import request_json
from shepherd.informers import Connection, Informer, Resource, Store
from shepherd.kube import load_configuration
from shepherd.lab.localapi import LocalAPIThread

T = TypeVar("T")
CONFIG_MAPS = Resource("", "v1", "configmaps", label_selector="app.kubernetes.io/managed-by=shepherd")
MANAGED = {"app.kubernetes.io/managed-by": "shepherd"}


def config_map(name: str, labels: dict[str, str], data: str = "x") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels}, "data": {"key": data}}


async def eventually(check: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return result


def run_informer(
    api: LocalAPIThread, resource: Resource, story: Callable[[Informer, list[Any]], Awaitable[None]]
) -> None:
    async def main() -> None:
        connection = Connection(load_configuration(str(api.kubeconfig_path)))
        changes: list[Any] = []
        informer = Informer(
            connection, resource, Store(), changed=lambda old, new: changes.append((old, new))
        )
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            await story(informer, changes)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await connection.close()

    asyncio.run(main())


def write(api: LocalAPIThread, method: str, path: str, body: Any = None) -> None:
    code, answer = request_json(method, f"{api.url}{path}", body)
    assert code in (200, 201), answer


def test_an_informer_lists_once_then_follows_changes_by_label(local_api: LocalAPIThread) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    write(local_api, "POST", path, config_map("before", MANAGED))
    write(local_api, "POST", path, config_map("someone-elses", {}))

    async def story(informer: Informer, changes: list[Any]) -> None:
        assert sorted(name for _, name in informer.store.objects) == ["before"], "selected by label"
        write(local_api, "POST", path, config_map("after", MANAGED))
        write(local_api, "PUT", f"{path}/before", config_map("before", MANAGED, "changed"))
        write(local_api, "DELETE", f"{path}/after")
        await eventually(lambda: len(changes) >= 4, "the three changes")

        assert informer.store.get("default", "before")["data"] == {"key": "changed"}  # type: ignore[index]
        assert informer.store.get("default", "after") is None
        assert informer.lists == 1

    run_informer(local_api, CONFIG_MAPS, story)


def test_a_cut_watch_resumes_without_listing_again(local_api: LocalAPIThread) -> None:
    path = "/api/v1/namespaces/default/configmaps"

    async def story(informer: Informer, changes: list[Any]) -> None:
        await eventually(lambda: local_api.emulator.open_watches == 1, "the watch")
        local_api.call(_close_watches(local_api))
        write(local_api, "POST", path, config_map("during-the-cut", MANAGED))
        await eventually(lambda: informer.store.get("default", "during-the-cut"), "the change made meanwhile")

        assert (informer.lists, informer.watches) == (1, 2)

    run_informer(local_api, CONFIG_MAPS, story)


@pytest.mark.local_api(retained_changes=2)
def test_a_version_too_old_to_resume_from_lists_again(local_api: LocalAPIThread) -> None:
    path = "/api/v1/namespaces/default/configmaps"

    async def story(informer: Informer, changes: list[Any]) -> None:
        await eventually(lambda: local_api.emulator.open_watches == 1, "the watch")
        local_api.call(_close_watches(local_api))
        for index in range(5):  # more changes than the server keeps: the watch cannot resume
            write(local_api, "POST", path, config_map(f"burst-{index}", MANAGED))
        await eventually(lambda: len(informer.store.objects) == 5, "all five, from a new list")

        assert informer.lists == 2

    run_informer(local_api, CONFIG_MAPS, story)


def test_a_resource_that_is_not_served_is_empty_and_ready(local_api: LocalAPIThread) -> None:
    absent = Resource("example.com", "v1", "widgets")

    async def story(informer: Informer, changes: list[Any]) -> None:
        assert informer.synced.is_set() and informer.store.objects == {}

    run_informer(local_api, absent, story)


async def _close_watches(api: LocalAPIThread) -> None:
    api.emulator.close_watches()
