"""The fault-injecting proxy in front of the real API server: requests pass with the ServiceAccount's own
token (RBAC still decides), faults are injected as asked and counted, a cut watch is seen by its client,
the kill point runs after the k-th write took effect (or before it is sent), a hung request is never
answered (sent or not), a silent watch stays open with nothing in it, and all that is held is let go when
the proxy stops."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from helpers import wait_until
from shepherd.lab.cluster import InstalledChart
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.faultproxy import FaultProxy, Hang, fault, proxied_kubeconfig, verb_of


@pytest.fixture
def proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    with FaultProxy.for_control_plane(control_plane, seed=7) as running:
        yield running


@pytest.fixture
def through_proxy(
    control_plane: ControlPlane, chart: InstalledChart, proxy: FaultProxy, tmp_path: Path
) -> Iterator[kubernetes.client.ApiClient]:
    """A client with the operator's ServiceAccount token, talking to the proxy."""
    token = control_plane.service_account_kubeconfig(
        chart.namespace, chart.service_account, tmp_path / "operator.kubeconfig"
    )
    config = proxied_kubeconfig(token, tmp_path / "proxied.kubeconfig", proxy.url)
    client = kubernetes.config.new_client_from_config(config_file=str(config))
    with client:
        yield client


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "example/c:1"}]},
            },
        },
    }


def test_verbs_are_told_apart_by_method_path_and_watch_query() -> None:
    assert verb_of("GET", "/apis/apps/v1/namespaces/a/deployments", "") == "LIST"
    assert verb_of("GET", "/apis/apps/v1/namespaces/a/deployments", "watch=true&resourceVersion=1") == "WATCH"
    assert verb_of("GET", "/apis/apps/v1/namespaces/a/deployments/x", "") == "GET"
    assert verb_of("GET", "/apis/apps/v1/namespaces/a/deployments/x/status", "") == "GET"
    assert verb_of("GET", "/api/v1/namespaces", "") == "LIST"
    assert verb_of("GET", "/api/v1/namespaces/a", "") == "GET"
    assert verb_of("GET", "/apis/shepherd.dev/v1alpha1/releases", "watch=1") == "WATCH"
    assert verb_of("GET", "/version", "") == "GET"
    assert verb_of("PATCH", "/apis/apps/v1/namespaces/a/deployments/x", "") == "PATCH"


def test_requests_pass_with_the_service_accounts_token_and_rbac_still_decides(
    through_proxy: kubernetes.client.ApiClient, proxy: FaultProxy, namespace: str, chart: InstalledChart
) -> None:
    review = kubernetes.client.AuthenticationV1Api(through_proxy).create_self_subject_review({})
    assert review.status.user_info.username == (
        f"system:serviceaccount:{chart.namespace}:{chart.service_account}"
    )
    apps = kubernetes.client.AppsV1Api(through_proxy)
    apps.create_namespaced_deployment(namespace, deployment("web"))
    apps.patch_namespaced_deployment("web", namespace, {"metadata": {"labels": {"touched": "yes"}}})
    assert apps.read_namespaced_deployment("web", namespace).metadata.labels["touched"] == "yes"
    with pytest.raises(ApiException) as refused:  # the chart's RBAC grants no update (PUT) of Deployments
        apps.replace_namespaced_deployment("web", namespace, deployment("web"))
    assert refused.value.status == 403
    assert proxy.count("POST", "/deployments$") == 1
    assert proxy.count("PATCH", "/deployments/web$") == 1
    assert proxy.count("GET", "/deployments/web$") == 1
    assert proxy.count("PUT", "/deployments/web$") == 1
    assert proxy.write_count == 4, proxy.written  # the review is a POST too
    assert not proxy.injected()


def test_faults_are_injected_by_verb_path_and_share_with_kubernetes_status_bodies(
    through_proxy: kubernetes.client.ApiClient, proxy: FaultProxy, namespace: str
) -> None:
    apps = kubernetes.client.AppsV1Api(through_proxy)
    apps.create_namespaced_deployment(namespace, deployment("web"))
    for code in (500, 429, 409):
        proxy.clear()
        proxy.inject(fault("PATCH", path="/deployments/web$", status=code))
        with pytest.raises(ApiException) as failed:
            apps.patch_namespaced_deployment("web", namespace, {"metadata": {"labels": {"n": str(code)}}})
        assert failed.value.status == code
        body = json.loads(failed.value.body)
        assert body["kind"] == "Status" and body["code"] == code and body["status"] == "Failure"
        assert body["reason"] == {500: "InternalError", 429: "TooManyRequests", 409: "Conflict"}[code]
        if code == 429:
            assert failed.value.headers["Retry-After"] == "1"
            assert body["details"]["retryAfterSeconds"] == 1
        # Only that verb and path: reads and other objects pass.
        assert apps.read_namespaced_deployment("web", namespace).metadata.labels.get("n") is None
        apps.list_namespaced_deployment(namespace)
    assert [(e.verb, e.status) for e in proxy.injected()] == [("PATCH", 500), ("PATCH", 429), ("PATCH", 409)]

    proxy.clear()
    proxy.inject(fault("LIST", status=500, share=0.5))
    outcomes = []
    for _ in range(40):
        try:
            apps.list_namespaced_deployment(namespace)
            outcomes.append(200)
        except ApiException as error:
            outcomes.append(error.status)
    assert set(outcomes) == {200, 500}, "about half fail"
    assert 8 <= outcomes.count(500) <= 32, outcomes
    assert proxy.count("LIST", injected=True) == outcomes.count(500)
    assert proxy.count("LIST", injected=False) >= outcomes.count(200)

    proxy.clear()
    proxy.inject(fault("LIST", status=500, every=3))
    failed_at = []
    for index in range(1, 10):
        try:
            apps.list_namespaced_deployment(namespace)
        except ApiException as error:
            assert error.status == 500
            failed_at.append(index)
    assert failed_at == [3, 6, 9], "every third, counted among the matching requests only"


def test_a_delay_holds_the_request(
    through_proxy: kubernetes.client.ApiClient, proxy: FaultProxy, namespace: str
) -> None:
    apps = kubernetes.client.AppsV1Api(through_proxy)
    proxy.inject(fault("LIST", delay=0.5))
    started = time.monotonic()
    apps.list_namespaced_deployment(namespace)
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    apps.create_namespaced_deployment(namespace, deployment("quick"))
    assert time.monotonic() - started < 0.5, "other verbs are not delayed"


def test_a_watch_streams_events_and_its_client_sees_the_cut(
    through_proxy: kubernetes.client.ApiClient,
    admin: kubernetes.client.ApiClient,
    proxy: FaultProxy,
    namespace: str,
) -> None:
    proxy.inject(fault("WATCH", cut_after=2.0))
    apps = kubernetes.client.AppsV1Api(through_proxy)
    seen: list[str] = []
    outcome: list[str] = []

    def watch() -> None:
        stream = kubernetes.watch.Watch().stream(
            apps.list_namespaced_deployment, namespace, timeout_seconds=60, _request_timeout=90
        )
        try:
            for event in stream:
                seen.append(event["object"].metadata.name)
            outcome.append("ended")
        except Exception as error:  # the cut, as urllib3 reports it
            outcome.append(type(error).__name__)

    watcher = threading.Thread(target=watch, daemon=True)
    started = time.monotonic()
    watcher.start()
    admin_apps = kubernetes.client.AppsV1Api(admin)
    deadline = time.monotonic() + 10
    while not seen:  # events stream through while the watch is open
        assert time.monotonic() < deadline, "no event came through the proxy's watch"
        admin_apps.create_namespaced_deployment(namespace, deployment(f"w{len(proxy.exchanges)}"))
        time.sleep(0.2)
    watcher.join(timeout=20)
    assert not watcher.is_alive(), "the client never saw its watch cut"
    assert 1.5 <= time.monotonic() - started < 20, "cut after about 2s, not at the 60s timeout"
    assert outcome, "the watch thread ended without an outcome"
    assert proxy.watches_cut == 1
    assert proxy.count("WATCH") == 1


def test_the_kill_point_runs_after_the_kth_write_took_effect_or_before_it_is_sent(
    through_proxy: kubernetes.client.ApiClient,
    admin: kubernetes.client.ApiClient,
    proxy: FaultProxy,
    namespace: str,
) -> None:
    apps = kubernetes.client.AppsV1Api(through_proxy)
    admin_apps = kubernetes.client.AppsV1Api(admin)
    existed: list[bool] = []

    def look() -> None:  # on the proxy's thread, while the client still waits for the answer
        names = {d.metadata.name for d in admin_apps.list_namespaced_deployment(namespace).items}
        existed.append("second" in names)

    point = proxy.kill_at(2, look)
    apps.list_namespaced_deployment(namespace)  # reads are not writes
    apps.create_namespaced_deployment(namespace, deployment("first"))
    assert not point.fired.is_set()
    apps.create_namespaced_deployment(namespace, deployment("second"))
    assert point.fired.is_set() and existed == [True], "the hook ran once the server had answered"
    apps.create_namespaced_deployment(namespace, deployment("third"))
    assert existed == [True], "only once"

    point = proxy.kill_at(1, look, before=True)
    with pytest.raises(ApiException):
        apps.create_namespaced_deployment(namespace, deployment("fourth"))
    assert point.fired.is_set()
    names = {d.metadata.name for d in admin_apps.list_namespaced_deployment(namespace).items}
    assert "fourth" not in names, "before: the write never reached the server"


def test_a_hung_write_is_never_answered_nor_sent_and_the_next_one_passes(
    through_proxy: kubernetes.client.ApiClient, proxy: FaultProxy, namespace: str
) -> None:
    apps = kubernetes.client.AppsV1Api(through_proxy)
    hung_patch(apps, proxy, namespace, "before", "hung")
    assert labels(apps, namespace, "web").get("n") is None, "never sent to the server"
    assert [(e.verb, e.path) for e in proxy.hung()] == [
        ("PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    ]
    apps.patch_namespaced_deployment("web", namespace, labelled("next"), _request_timeout=(5, 5))
    assert labels(apps, namespace, "web")["n"] == "next", "times=1: the rule is spent"
    assert proxy.release() == 1 and proxy.holding == 0


def test_a_write_whose_answer_is_withheld_was_applied_by_the_server(
    through_proxy: kubernetes.client.ApiClient, proxy: FaultProxy, namespace: str
) -> None:
    apps = kubernetes.client.AppsV1Api(through_proxy)
    hung_patch(apps, proxy, namespace, "after", "applied")
    assert labels(apps, namespace, "web")["n"] == "applied", "the server applied it; its answer never came"
    assert len(proxy.hung()) == 1
    assert [status for _, verb, _, status in proxy.written if verb == "PATCH"] == [200], proxy.written


def hung_patch(
    apps: kubernetes.client.AppsV1Api, proxy: FaultProxy, namespace: str, hang: Hang, value: str
) -> None:
    """Deployment web created, then its PATCH to label n=`value` hung (`hang` the server): its client
    gives up after its 2s read timeout, seeing neither an answer nor the connection closed."""
    apps.create_namespaced_deployment(namespace, deployment("web"))
    rule = fault("PATCH", path="/deployments/web$", hang=hang, times=1)
    proxy.inject(rule)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):  # no answer, and the connection still open
        apps.patch_namespaced_deployment("web", namespace, labelled(value), _request_timeout=(5, 2))
    assert 2 <= time.monotonic() - started < 10
    assert rule.applied == 1 and proxy.holding == 1, "held after its client gave up, until the proxy stops"


def test_a_silent_watch_stays_open_and_forwards_nothing_until_it_is_cut(
    through_proxy: kubernetes.client.ApiClient,
    admin: kubernetes.client.ApiClient,
    proxy: FaultProxy,
    namespace: str,
) -> None:
    silent = fault("WATCH", path="/deployments$", silent=True, times=1)
    proxy.inject(silent)
    apps = kubernetes.client.AppsV1Api(through_proxy)
    silenced, heard = Watcher(apps, namespace), Watcher(apps, namespace)
    silenced.start()
    wait_until(lambda: silent.applied == 1, message="the silent watch to open")
    heard.start()  # the rule is spent: this one is forwarded
    wait_until(lambda: proxy.count("WATCH", injected=False) == 1, message="the second watch to open")
    admin_apps = kubernetes.client.AppsV1Api(admin)
    admin_apps.create_namespaced_deployment(namespace, deployment("seen"))
    wait_until(lambda: "seen" in heard.names, message="the forwarded watch to see the Deployment")
    # The server ends each watch after its timeoutSeconds (1s): the forwarded one ends, the silent one not.
    wait_until(lambda: not heard.thread.is_alive(), timeout=15, message="the forwarded watch to end")
    assert silenced.thread.is_alive() and silenced.names == [] and not silenced.outcome
    assert proxy.holding == 1
    assert proxy.cut_watches(path="/deployments$") == 1
    silenced.thread.join(timeout=10)
    assert not silenced.thread.is_alive(), "the cut reaches the silent watch's client"
    assert silenced.names == [] and silenced.outcome
    assert proxy.count("WATCH", injected=True) == 1 and proxy.watches_cut == 1 and proxy.holding == 0


def test_whatever_the_proxy_holds_is_let_go_when_it_stops(
    control_plane: ControlPlane, chart: InstalledChart, namespace: str, tmp_path: Path
) -> None:
    token = control_plane.service_account_kubeconfig(
        chart.namespace, chart.service_account, tmp_path / "operator.kubeconfig"
    )
    proxy = FaultProxy.for_control_plane(control_plane)
    with proxy:
        config = proxied_kubeconfig(token, tmp_path / "proxied.kubeconfig", proxy.url)
        client = kubernetes.config.new_client_from_config(config_file=str(config))
        apps = kubernetes.client.AppsV1Api(client)
        proxy.inject(
            fault("PATCH", hang="before"),
            fault("POST", hang="after"),
            fault("LIST", delay=60),
            fault("WATCH", silent=True, times=1),
        )
        outcomes: dict[str, str] = {}

        def call(what: str, request: Callable[[], object]) -> None:
            try:
                request()
                outcomes[what] = "answered"
            except Exception as error:  # the connection closed under it, as urllib3 reports it
                outcomes[what] = type(error).__name__

        calls = {
            "hung": lambda: apps.patch_namespaced_deployment("web", namespace, labelled("x")),
            "withheld": lambda: apps.create_namespaced_deployment(namespace, deployment("web")),
            "delayed": lambda: apps.list_namespaced_deployment(namespace),
            "silent": lambda: list(Watcher(apps, namespace).stream()),
            "forwarded": lambda: list(Watcher(apps, namespace, seconds=60).stream()),
        }
        threads = {
            what: threading.Thread(target=call, args=(what, request), daemon=True)
            for what, request in calls.items()
        }
        for what, thread in threads.items():
            thread.start()
            if what == "silent":
                wait_until(lambda: proxy.count("WATCH", injected=True) == 1, message="the silent watch")
        wait_until(lambda: proxy.holding == 4, message="four requests held")
        wait_until(lambda: proxy.count("WATCH", injected=False) == 1, message="the forwarded watch")
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 2, "stopped at once: not after the 60s delay, nor the 60s watch"
    assert proxy._thread is not None and not proxy._thread.is_alive(), "the proxy's thread ended"
    for thread in threads.values():
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads.values()), outcomes
    assert set(outcomes) == set(calls), outcomes
    assert "answered" not in [outcomes[what] for what in ("hung", "withheld", "delayed", "silent")], outcomes
    assert len(proxy.hung()) == 3, "the hung, the withheld and the delayed got no answer"
    client.close()


def labelled(value: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"n": value}}}


def labels(apps: kubernetes.client.AppsV1Api, namespace: str, name: str) -> dict[str, str]:
    return dict(apps.read_namespaced_deployment(name, namespace).metadata.labels or {})


class Watcher:
    """A watch of the namespace's Deployments in a thread of its own (the server ends it after `seconds`),
    and the names it saw."""

    def __init__(self, apps: kubernetes.client.AppsV1Api, namespace: str, seconds: int = 1) -> None:
        self.apps = apps
        self.namespace = namespace
        self.seconds = seconds
        self.names: list[str] = []
        self.outcome = ""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def stream(self) -> Iterator[Any]:
        return kubernetes.watch.Watch().stream(
            self.apps.list_namespaced_deployment,
            self.namespace,
            timeout_seconds=self.seconds,
            _request_timeout=90,
        )

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.stream():
                self.names.append(event["object"].metadata.name)
            self.outcome = "ended"
        except Exception as error:  # the cut, as urllib3 reports it
            self.outcome = type(error).__name__
