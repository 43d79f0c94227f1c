"""The watch-fed store keeps the newest version of each object, whichever way it arrives."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shepherd.informers import Expired, Informer, Resource, Store, _lines, newer


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
