"""The watch-fed store keeps the newest version of each object, whichever way it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from watchserver import WatchServer, eventually

from shepherd.informers import Connection, Expired, Informer, Resource, Store, _lines, newer


def obj(name: str, version: int, namespace: str = "shop", **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "resourceVersion": str(version), "labels": labels}
    return {"metadata": meta}


def test_resource_versions_compare_as_numbers_not_as_text() -> None:
    assert newer("10", "9")
    assert not newer("9", "10")
    assert not newer("7", "7")


def test_a_version_that_is_not_a_number_counts_as_a_change() -> None:
    assert newer("abc", "12")
    assert not newer("abc", "abc")


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = Store()
    assert store.put(obj("api", 12))
    assert not store.put(obj("api", 11)), "a stale event is refused"
    assert store.get("shop", "api") == obj("api", 12)


def test_the_echo_of_a_version_already_held_is_not_stale() -> None:
    store = Store()
    written = {**obj("api", 12), "status": {"from": "the write's answer"}}
    store.put(written)

    assert store.put(obj("api", 12)), "the watch's echo of the operator's own write"
    assert store.get("shop", "api") == written, "the version held is kept, not replaced by its echo"


def test_a_reader_gets_its_own_copy() -> None:
    store = Store("app")
    store.put(obj("api", 12, app="shop"))
    store.get("shop", "api")["metadata"]["labels"]["app"] = "changed by a reader"  # type: ignore[index]
    store.labelled("shop", "shop")[0]["metadata"]["name"] = "renamed"

    assert store.get("shop", "api") == obj("api", 12, app="shop")
    assert [o["metadata"]["name"] for o in store.in_namespace("shop")] == ["api"]


def test_a_deletion_hides_older_events_of_the_object_until_it_is_created_again() -> None:
    store = Store(index_label="app")
    store.put(obj("api", 5, app="shop"))
    assert store.remove(obj("api", 8))

    assert not store.put(obj("api", 7, app="shop")), "a change made before the deletion"
    assert store.get("shop", "api") is None
    assert list(store.labelled("shop", "shop")) == []
    assert store.put(obj("api", 9, app="shop")), "created again after the deletion"
    assert [o["metadata"]["resourceVersion"] for o in store.labelled("shop", "shop")] == ["9"]


def test_a_deletion_older_than_the_version_held_is_stale() -> None:
    store = Store()
    store.put(obj("api", 9))

    assert not store.remove(obj("api", 8))
    assert store.get("shop", "api") is not None


def test_the_label_index_follows_a_label_change() -> None:
    store = Store(index_label="app")
    store.put(obj("api", 1, app="shop"))
    store.put(obj("api", 2, app="cart"))

    assert list(store.labelled("shop", "shop")) == []
    assert [o["metadata"]["name"] for o in store.labelled("shop", "cart")] == ["api"]
    assert [o["metadata"]["name"] for o in store.in_namespace("shop")] == ["api"]


def test_a_relist_drops_what_went_and_keeps_what_was_written_after_the_list() -> None:
    store = Store()
    store.put(obj("gone", 3))
    store.put(obj("kept", 4))
    store.put(obj("written-after", 21))  # the answer of a write the list at 20 did not include yet

    store.replace([obj("kept", 4), obj("new", 18)], list_version="20")

    assert sorted(name for _, name in store.objects) == ["kept", "new", "written-after"]


def test_a_relist_forgets_deletions_it_has_seen() -> None:
    store = Store()
    store.put(obj("api", 3))
    store.remove(obj("api", 5))

    store.replace([], list_version="20")
    assert store.put(obj("api", 22)), "created again after the list"


def informer(store: Store, seen: list[tuple[Any, Any]], metadata_only: bool = False) -> Informer:
    resource = Resource("apps", "v1", "deployments", metadata_only=metadata_only)
    return Informer(None, resource, store, changed=lambda old, new: seen.append((old, new)))  # type: ignore[arg-type]


def test_watch_events_change_the_store_and_tell_who_listens() -> None:
    store, seen = Store(), []
    watcher = informer(store, seen)

    reached = watcher._apply({"type": "ADDED", "object": obj("api", 3)}, "1")
    watcher._apply({"type": "MODIFIED", "object": obj("api", 2)}, reached)  # stale: told nobody
    watcher._apply({"type": "DELETED", "object": obj("api", 4)}, reached)

    assert reached == "3"
    assert seen == [(None, obj("api", 3)), (obj("api", 3), None)]
    assert store.objects == {}


def test_a_bookmark_moves_the_version_on_without_an_object() -> None:
    store, seen = Store(), []
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "40"}}}

    assert informer(store, seen)._apply(bookmark, "12") == "40"
    assert seen == [] and store.objects == {}


def test_an_expired_version_asks_for_a_new_list() -> None:
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
    with pytest.raises(Expired):
        informer(Store(), [])._apply(expired, "12")


def test_metadata_only_keeps_no_data() -> None:
    store: Store = Store()
    config_map = {**obj("config", 3), "data": {"big": "x" * 1000}}
    informer(store, [], metadata_only=True)._apply({"type": "ADDED", "object": config_map}, "1")

    assert store.get("shop", "config") == {"metadata": config_map["metadata"]}


def test_watch_lines_longer_than_a_read_are_joined() -> None:
    class Stream:
        async def iter_any(self) -> Any:
            for chunk in (b'{"a": "' + b"x" * 100_000, b'"}\n{"b"', b": 1}\n", b'{"c": 2}'):
                yield chunk

    async def read() -> list[bytes]:
        return [line async for line in _lines(Stream())]  # type: ignore[arg-type]

    lines = asyncio.run(read())
    assert [len(line) for line in lines] == [100_009, 8, 8]


def test_managed_fields_are_not_kept() -> None:
    store = Store()
    deployment = obj("api", 3)
    deployment["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]

    store.put(deployment)

    assert "managedFields" not in store.get("shop", "api")["metadata"]  # type: ignore[index]
    assert store.get("shop", "api")["metadata"]["resourceVersion"] == "3"  # type: ignore[index]


def test_the_copy_kubectl_apply_keeps_is_not_kept_but_other_annotations_are() -> None:
    store = Store()
    release = obj("shop", 4)
    release["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"spec": "a copy of everything"}',
        "shepherd.dev/promote": "true",
    }

    store.put(release)

    assert store.get("shop", "shop")["metadata"]["annotations"] == {"shepherd.dev/promote": "true"}  # type: ignore[index]
    assert "kubectl.kubernetes.io/last-applied-configuration" in release["metadata"]["annotations"], (
        "not changed"
    )


DEPLOYMENTS = Resource("apps", "v1", "deployments")


@asynccontextmanager
async def following(
    server: WatchServer, **options: Any
) -> AsyncIterator[tuple[Informer, asyncio.Task[None]]]:
    """An informer of the server's deployments, running."""
    connection = Connection(server.configuration())
    informer = Informer(connection, DEPLOYMENTS, Store(), **options)
    task = asyncio.create_task(informer.run())
    try:
        yield informer, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await connection.close()


def spec_of(informer: Informer, name: str) -> object:
    return (informer.store.get("shop", name) or {}).get("spec")


def test_an_unexpected_exception_is_logged_and_the_informer_lists_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failed: list[str] = []

    def changed(_old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        if new is not None and new.get("spec") == {"replicas": 2} and not failed:
            failed.append("once")
            raise KeyError("a bug in whoever listens")

    async def story() -> None:
        server = WatchServer("/apis/apps/v1", "deployments")
        async with server.running(), following(server, changed=changed) as (informer, task):
            await server.put("api", spec={"replicas": 1})
            await eventually(lambda: server.watches == 1, "the watch")
            await server.put("api", spec={"replicas": 2})
            await eventually(lambda: server.lists == 2, "a new list after the exception")
            await server.put("api", spec={"replicas": 3})
            await eventually(lambda: spec_of(informer, "api") == {"replicas": 3}, "the next change")
            assert not task.done(), "the informer still runs"

    asyncio.run(story())
    assert failed == ["once"]
    assert "KeyError: 'a bug in whoever listens'" in caplog.text, "logged with its traceback"


def test_a_silent_watch_is_opened_again_after_its_idle_limit(caplog: pytest.LogCaptureFixture) -> None:
    async def story() -> None:
        server = WatchServer("/apis/apps/v1", "deployments")
        async with server.running(), following(server, idle_seconds=0.3) as (informer, task):
            await eventually(lambda: server.watches == 1, "the first watch")
            server.silent = True
            await server.put("api", spec={"replicas": 1})  # the open watch tells this, then nothing more
            await eventually(lambda: server.watches == 2, "the watch opened again, silent")
            opened = asyncio.get_running_loop().time()
            await eventually(lambda: server.watches == 3, "the silent watch dropped and opened again")
            assert asyncio.get_running_loop().time() - opened >= 0.3, "not before its idle limit"
            assert "no event or bookmark for 0.3s: the watch is opened again" in caplog.text
            server.silent = False
            await server.put("api", spec={"replicas": 2})
            await eventually(lambda: spec_of(informer, "api") == {"replicas": 2}, "the change, on a watch")
            assert server.lists == 1, "each watch resumed where the last one was: no new list"
            assert not task.done()

    asyncio.run(story())


def test_an_informer_that_cannot_list_says_why_and_since_when_and_recovers_by_itself() -> None:
    now = [100.0]

    async def story() -> None:
        server = WatchServer("/apis/apps/v1", "deployments")
        server.refusing = 403
        async with server.running(), following(server, clock=lambda: now[0]) as (informer, _task):
            await eventually(lambda: informer.last_error, "a refused list")
            now[0] = 110.0
            assert informer.lagging() == 10.0, "never listed: counted from its start"
            assert informer.problem(after=60.0) is None
            assert informer.problem(after=10.0) == (
                "deployments in all namespaces: no successful list or watch for 10s: "
                'HTTP 403: deployments is forbidden: cannot list resource "deployments"'
            )
            server.refusing = None
            await eventually(informer.synced.is_set, "a list, once allowed")
            assert informer.lagging() is None and informer.problem(after=0.0) is None

            server.refusing = 403
            await server.compact()  # the watch ends with 410: the informer must list, and is refused
            await eventually(lambda: "HTTP 403" in informer.last_error, "the refused list")
            now[0] = 130.0
            assert informer.lagging() == 20.0, "listed before: counted from its first failure since"

    asyncio.run(story())


def test_a_deletion_is_remembered_for_a_while_then_let_go() -> None:
    now = [0.0]
    store = Store(clock=lambda: now[0], deletions_kept_seconds=300)
    store.put(obj("api", 5))
    store.remove(obj("api", 8))
    now[0] = 299.0
    store.expire()
    assert not store.put(obj("api", 7)), "a late answer of a write made before the deletion"

    now[0] = 301.0
    store.expire()
    assert store.sizes()["deletions"] == 0
    assert store.sizes() == Store().sizes(), "nothing kept of it"


def test_deletions_are_let_go_oldest_first_as_time_passes() -> None:
    now = [0.0]
    store = Store(clock=lambda: now[0], deletions_kept_seconds=10)
    for i in range(1000):
        now[0] = i / 100
        store.put(obj(f"job-{i}", 2 * i + 1))
        store.remove(obj(f"job-{i}", 2 * i + 2))
    assert store.sizes()["deletions"] == 1000, "all within 10s"
    now[0] = 15.0
    store.remove(obj("another", 5000))  # each deletion lets go of those past their time
    assert store.sizes()["deletions"] == 1 + 499, "those of the last 10s, and its own"


def test_an_expired_watch_lists_at_once_but_a_list_expired_already_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def story() -> None:
        server = WatchServer("/apis/apps/v1", "deployments")
        async with server.running(), following(server) as (informer, _task):
            await eventually(lambda: server.watches == 1, "the watch")
            await server.put("api", spec={"replicas": 1})
            await eventually(lambda: spec_of(informer, "api") == {"replicas": 1}, "an event")
            await server.compact()
            await eventually(lambda: server.lists == 2, "a list at once")
            assert "too old" not in caplog.text, "an ordinary expiry: no failure"
            server.expiring = True  # from now on every version is too old, even a fresh list's
            await server.compact()
            await eventually(lambda: server.lists == 4, "lists, with a pause between them")
            assert caplog.text.count("HTTP 410: the resourceVersion is too old to watch from") >= 1

    asyncio.run(story())
