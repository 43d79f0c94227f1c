"""What a reconcile reads: the watches' objects and the answers of the operator's own writes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from watchserver import WatchServer, eventually

from shepherd.cache import Cache, NotFilled, Wakes, approved_release, owning_release
from shepherd.core.workloads import INSTANCE_LABEL
from shepherd.kube import ReleaseKey, Written
from shepherd.limits import Limits

SHOP = ReleaseKey("prod", "shop")


def child(
    name: str, version: int, uid: str = "uid-shop", release: str = "shop", **extra: Any
) -> dict[str, Any]:
    meta = {
        "name": name,
        "namespace": "prod",
        "resourceVersion": str(version),
        "labels": {INSTANCE_LABEL: release},
        "ownerReferences": [{"kind": "Release", "name": release, "uid": uid}],
    }
    return {"metadata": meta, **extra}


def test_only_children_owned_by_this_release_are_its_own() -> None:
    cache = Cache()
    cache.deployments.put(child("shop-api", 1))
    cache.deployments.put(child("shop-old", 2, uid="uid-of-a-deleted-shop"))
    cache.deployments.put(child("cart-api", 3, uid="uid-cart", release="cart"))

    assert list(cache.owned_deployments(SHOP, "uid-shop")) == ["shop-api"]


def test_a_write_is_seen_by_the_next_pass_before_its_echo() -> None:
    cache = Cache()
    cache.deployments.put(child("shop-api", 4, spec={"replicas": 1}))

    cache.remember([Written("deployments", child("shop-api", 9, spec={"replicas": 3}))])
    cache.deployments.put(child("shop-api", 6, spec={"replicas": 2}))  # a watch event from before the write

    assert cache.owned_deployments(SHOP, "uid-shop")["shop-api"]["spec"] == {"replicas": 3}


def test_a_deleted_child_is_gone_at_once_and_stays_gone() -> None:
    cache = Cache()
    cache.jobs.put(child("shop-smoke-1", 4))

    cache.remember([Written("jobs", child("shop-smoke-1", 7), deleted=True)])
    cache.jobs.put(child("shop-smoke-1", 5))  # the job controller's update, from before the deletion

    assert cache.owned_jobs(SHOP, "uid-shop") == {}


def test_a_config_map_written_is_kept_without_its_data() -> None:
    cache = Cache()
    cache.remember([Written("configmaps", child("shop-config-5d8f", 3, data={"LOG_LEVEL": "debug"}))])

    assert cache.owned_config_maps(SHOP, "uid-shop")["shop-config-5d8f"] == {
        "metadata": child("shop-config-5d8f", 3)["metadata"]
    }


def test_the_release_status_written_replaces_the_copy_the_decision_read() -> None:
    cache = Cache()
    release = {
        "metadata": {"name": "shop", "namespace": "prod", "resourceVersion": "10"},
        "status": {"step": 1},
    }
    cache.releases.put(release)

    answer = {**release, "metadata": {**release["metadata"], "resourceVersion": "11"}, "status": {"step": 2}}
    cache.remember([Written("releases", answer)])
    cache.releases.put(release)  # Kopf's copy of the version the decision was made on, arriving late

    assert (cache.release(SHOP) or {})["status"] == {"step": 2}


def test_recorded_revisions_are_parsed_once_per_version() -> None:
    cache = Cache()
    record = child("shop-1", 3, revision=1, data={"version": "1.0.0", "components": []})
    cache.revisions.put(record)

    first = cache.recorded_revisions(SHOP, "uid-shop")[1]
    assert cache.recorded_revisions(SHOP, "uid-shop")[1] is first
    cache.revisions.put({**record, "metadata": {**record["metadata"], "resourceVersion": "4"}})
    assert cache.recorded_revisions(SHOP, "uid-shop")[1] is not first


def test_policies_approvals_and_namespace_labels() -> None:
    cache = Cache()
    cache.policies.put({"metadata": {"name": "freeze", "resourceVersion": "1"}})
    cache.approvals.put({"metadata": {"name": "ok", "namespace": "prod", "resourceVersion": "2"}})
    cache.approvals.put({"metadata": {"name": "ok", "namespace": "dev", "resourceVersion": "3"}})
    cache.namespaces.put({"metadata": {"name": "prod", "resourceVersion": "4", "labels": {"tier": "1"}}})

    assert [p["metadata"]["name"] for p in cache.all_policies()] == ["freeze"]
    assert [a["metadata"]["namespace"] for a in cache.namespace_approvals("prod")] == ["prod"]
    assert cache.namespace_labels("prod") == {"tier": "1"}
    assert cache.namespace_labels("unseen") == {}


def test_a_child_names_its_release_by_label_and_an_approval_by_its_spec() -> None:
    assert owning_release(child("shop-api", 1)) == SHOP
    assert owning_release({"metadata": {"name": "x", "namespace": "prod"}}) is None
    approval = {"metadata": {"namespace": "prod", "name": "a"}, "spec": {"release": "shop"}}
    assert approved_release(approval) == SHOP
    assert approved_release(None) is None


def test_parsed_revisions_are_let_go_with_their_records() -> None:
    cache = Cache()
    first = child("shop-1", 3, revision=1, data={"version": "1.0.0", "components": []})
    second = child("shop-2", 4, revision=2, data={"version": "1.1.0", "components": []})
    cache.revisions.put(first)
    cache.revisions.put(second)
    assert set(cache.recorded_revisions(SHOP, "uid-shop")) == {1, 2}

    cache.revisions.remove(child("shop-1", 5))  # beyond the history limit
    assert set(cache.recorded_revisions(SHOP, "uid-shop")) == {2}
    assert set(cache._parsed[SHOP]) == {"shop-2"}

    cache.forget(SHOP)
    assert SHOP not in cache._parsed


def test_a_pass_waits_for_httproutes_no_longer_than_the_unready_limit() -> None:
    async def story() -> None:
        server = WatchServer("/apis/gateway.networking.k8s.io/v1", "httproutes")
        server.refusing = 403
        async with server.running():
            cache = Cache()
            wakes = Wakes(release=lambda _key: None, everyone=lambda: None, namespace=lambda _ns: None)
            limits = Limits(unready_after_seconds=1)
            connection = cache.watch(server.configuration(), ("prod",), wakes, limits=limits)
            started = asyncio.get_running_loop().time()
            try:
                with pytest.raises(NotFilled) as refused:
                    await cache.watching_routes()
                waited = asyncio.get_running_loop().time() - started
                assert 1 <= waited < 5
                message = str(refused.value)
                assert message.startswith("HTTPRoutes not listed within 1s: httproutes in prod: ")
                assert message.endswith(
                    'HTTP 403: httproutes is forbidden: cannot list resource "httproutes"'
                )
                server.refusing = None
                routes = cache.route_informers[0]
                await eventually(routes.synced.is_set, "the routes listed, once allowed")
                await cache.watching_routes()  # the next pass goes on
            finally:
                for task in cache._route_tasks:
                    task.cancel()
                await asyncio.gather(*cache._route_tasks, return_exceptions=True)
                await connection.close()

    asyncio.run(story())


# --- the fingerprint: equal fingerprints mean equal observations ------------------------------------

OTHER = ReleaseKey("prod", "backend")
ROUTE = ("prod", "shop-route")


def observations(cache: Cache) -> tuple[object, ...]:
    """Everything a pass over SHOP reads from the cache, decoded, as reconcile gathers it."""
    uid = "uid-shop"
    return (
        cache.release(SHOP),
        cache.owned_deployments(SHOP, uid),
        cache.recorded_revisions(SHOP, uid),
        cache.owned_jobs(SHOP, uid),
        cache.owned_config_maps(SHOP, uid),
        cache.owned_services(SHOP, uid),
        cache.namespace_approvals("prod"),
        cache.all_policies(),
        cache.namespace_labels("prod"),
        cache.route(*ROUTE),
        cache.release(OTHER),
    )


def named(name: str, version: int, namespace: str = "prod", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": str(version)}, **extra}


STORES = ("deployments", "revisions", "jobs", "config_maps", "services")
change = st.one_of(
    st.tuples(st.sampled_from(STORES), st.sampled_from(["shop-a", "shop-b", "cart-a"]), st.booleans()),
    st.tuples(st.just("approvals"), st.sampled_from(["a1", "a2"]), st.booleans()),
    st.tuples(st.just("policies"), st.sampled_from(["p1", "p2"]), st.booleans()),
    st.tuples(st.just("namespaces"), st.sampled_from(["prod", "dev"]), st.booleans()),
    st.tuples(st.just("routes"), st.sampled_from(["shop-route", "other-route"]), st.booleans()),
    st.tuples(st.just("releases"), st.sampled_from(["shop", "backend", "cart"]), st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(change, max_size=40))
def test_equal_fingerprints_mean_equal_observations(changes: list[tuple[str, str, bool]]) -> None:
    """For any sequence of watch events (objects created, changed, deleted), a pass that finds the
    fingerprint it decided on has read exactly what that decision read: skipping it hides nothing."""
    cache = Cache()
    seen: dict[object, tuple[object, ...]] = {}
    version = 0
    for store_name, name, present in [("releases", "shop", True), *changes]:
        version += 1
        store = getattr(cache, store_name)
        if store_name in STORES:
            release = name.split("-")[0]
            obj = child(name, version, uid=f"uid-{release}", release=release, revision=version, data={})
        elif store_name == "namespaces":
            obj = named(name, version, namespace="", labels={"tier": str(version)})
            obj["metadata"]["labels"] = {"tier": str(version)}
        elif store_name == "approvals":
            obj = named(name, version, spec={"release": "shop", "revision": version})
        else:
            obj = named(
                name, version, namespace="" if store_name == "policies" else "prod", spec={"v": version}
            )
        if present:
            store.put(obj)
        else:
            store.remove(obj)
        fingerprint = cache.fingerprint(SHOP, [("prod", "backend")], [ROUTE])
        if fingerprint is None:
            continue  # the Release itself is gone: nothing is skipped
        observed = observations(cache)
        assert seen.setdefault(fingerprint, observed) == observed


def test_a_release_watched_elsewhere_has_no_fingerprint() -> None:
    cache = Cache(watched=frozenset({"prod"}))
    cache.releases.put(named("shop", 1))
    assert cache.fingerprint(SHOP, [("prod", "backend")], []) is not None
    assert cache.fingerprint(SHOP, [("ops", "backend")], []) is None, "read from the API server each pass"
    assert cache.fingerprint(ReleaseKey("prod", "cart"), [], []) is None, "not in the cache"
