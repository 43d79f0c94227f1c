"""Issue 19 on the real API server: nothing the operator waits for can stop it for good.

The operator runs as the chart runs it, with small limits (`--request-timeout=2s`, `--outside-workers=2`),
and talks to the API server through the fault proxy:

- one write, the first after a canary's creation, hangs (never sent, or applied and never answered): its
  Release still reaches its indefinite pause and is promoted, and another Release's timed pause, ending
  while the write hangs, ends on time;
- a Prometheus that answers after a minute (the fault proxy in front of the real server): each query of
  that Release fails at its own timeout (2s) and counts an error, `consecutiveErrorLimit` rolls it back, and
  another Release's timed pause, ending while those queries fill the outside pool, ends on time;
- the Deployment watch goes silent (`--watch-idle-timeout=3s`): a canary that becomes ready meanwhile is
  noticed within the idle timeout, a reconnect and a pass.

Each story checks, with the proxy's counts, that its fault fired.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from canary_runs import Timeline
from shepherd.lab.cluster import OperatorProcess
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.faultproxy import FaultProxy, Hang, fault
from shepherd.lab.podsim import PodSimulator
from shepherd.lab.promserver import PrometheusServer
from story import GROUP, VERSION, Story, kubectl_runner, quickstart_release

REQUEST_TIMEOUT = 2.0  # --request-timeout
OUTSIDE_WORKERS = 2  # --outside-workers
IDLE_TIMEOUT = 3.0  # --watch-idle-timeout, for the silent watch's story
LIMITS = (f"--request-timeout={REQUEST_TIMEOUT:g}s", f"--outside-workers={OUTSIDE_WORKERS}")
WRITES = ("POST", "PUT", "PATCH", "DELETE")
TIMED_PAUSE = 10.0  # the other Release's pause, in seconds
# A due step is decided by the pass its timer starts, then written; read back by polling every 0.1s.
ON_TIME = 3.0
# How long before the other Release's pause ends the hung Release's update goes in: its canary is created
# and the write after it sent within a second or two, and that write's hang (the request timeout) and the
# first backoff (1 to 2s) cover the pause's end.
HANG_LEAD = 2.5
# A pass after the reconnect: the first watch is silent until its idle timeout, the next one delivers the
# change, and the pass it wakes writes the status.
RECONNECT_AND_PASS = 4.0


def release(name: str, version: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """The quickstart Release named `name`, its api component alone at 2 replicas, no bake."""
    manifest = quickstart_release(version, strategy={"canary": {"steps": steps}}, postRelease={}, **spec)
    manifest["metadata"]["name"] = name
    api = manifest["spec"]["components"][0]
    api["replicas"] = 2
    manifest["spec"]["components"] = [api]
    return manifest


def at_step(step: int, revision: int = 2, phase: str | None = None) -> Callable[[Mapping[str, Any]], bool]:
    def check(status: Mapping[str, Any]) -> bool:
        return (
            status.get("revision") == revision
            and status.get("currentStep") == step
            and (phase is None or status.get("phase") == phase)
        )

    return check


def phase(name: str, revision: int = 2) -> Callable[[Mapping[str, Any]], bool]:
    return lambda s: s.get("phase") == name and s.get("revision") == revision


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def monotonic_of(wall: float) -> float:
    """A wall-clock time (an operator's timestamp) on this process's monotonic clock."""
    return wall - time.time() + time.monotonic()


@pytest.fixture
def operator_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Small limits, and the test's own flags (a parameter)."""
    return (*LIMITS, *getattr(request, "param", ()))


@pytest.fixture
def operator(proxied_operator: OperatorProcess) -> OperatorProcess:
    """The stories' operator is the one behind the fault proxy."""
    return proxied_operator


@pytest.fixture
def other(
    control_plane: ControlPlane,
    admin: kubernetes.client.ApiClient,
    operator: OperatorProcess,
    tmp_path: Path,
) -> Iterator[Story]:
    """A story in a second namespace, for the Release that must not be held up."""
    namespace = f"other-{uuid.uuid4().hex[:8]}"
    core = kubernetes.client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": namespace}})
    kubectl = kubectl_runner(control_plane.kubeconfig, namespace, tmp_path / "kube-cache-other")
    yield Story(admin, namespace, kubectl, operator)
    core.delete_namespace(namespace, propagation_policy="Background")


TIMED_STEPS = [{"setWeight": 50}, {"pause": {"duration": f"{TIMED_PAUSE:g}s"}}, {"pause": {}}]


class TimedPause:
    """The other Release, `cart`: revision 2 through setWeight 50 and a timed pause, to an indefinite
    pause; when its pause ended, as the operator decided it and as read back from the API server."""

    def __init__(self, story: Story) -> None:
        self.story = story
        self.ends = 0.0  # time.time() at the end of revision 2's timed pause, once it began
        story.apply(release("cart", "1.0.0", TIMED_STEPS))

    def start(self) -> float:
        """Revision 2 to its timed pause; returns when the pause ends (time.time())."""
        self.story.wait_phase("Succeeded", revision=1, name="cart")
        self.story.apply(release("cart", "1.1.0", TIMED_STEPS))
        paused = self.story.wait("cart's timed pause", at_step(1), "cart")
        self.ends = stamp(paused["stepSince"]) + TIMED_PAUSE
        return self.ends

    def lateness(self) -> tuple[float, float]:
        """(decided, seen): seconds past the pause's end when the operator moved on, and when the API
        server showed it."""
        moved = self.story.wait("cart past its timed pause", at_step(2), "cart", timeout=TIMED_PAUSE + 30)
        seen = time.time()
        return stamp(moved["stepSince"]) - self.ends, seen - self.ends


def writes_of(namespace: str, name: str) -> str:
    """A path regex of the writes to Release `name` and to its Deployments."""
    return rf"/namespaces/{namespace}/(releases/{name}(/|$)|deployments/{name}-)"


@pytest.mark.parametrize("hang", ["before", "after"], ids=["never-sent", "applied-unanswered"])
def test_one_write_hung_mid_canary_holds_neither_its_release_nor_another(
    story: Story,
    other: Story,
    fault_proxy: FaultProxy,
    admin: kubernetes.client.ApiClient,
    hang: Hang,
) -> None:
    steps = [{"setWeight": 50}, {"pause": {}}]
    namespace = story.namespace
    story.apply(release("shop", "1.0.0", steps))
    cart = TimedPause(other)
    story.wait_phase("Succeeded", revision=1)
    timeline = Timeline(admin, namespace)
    timeline.start()

    # The first write to shop or its Deployments after the canary's creation hangs.
    hung_write = fault(*WRITES, path=writes_of(namespace, "shop"), hang=hang, times=1)
    fault_proxy.writes_pattern = rf"/namespaces/{namespace}/deployments$"  # numbers the creations
    created = fault_proxy.kill_at(1, lambda: fault_proxy.inject(hung_write))
    pause_ends = cart.start()
    time.sleep(max(0.0, pause_ends - HANG_LEAD - time.time()))  # the scene: shop hangs as cart's pause ends
    updated = time.monotonic()
    story.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "releases", "shop", {"spec": release("shop", "1.1.0", steps)["spec"]}
    )

    decided, seen = cart.lateness()
    story.wait("shop's indefinite pause", at_step(1, phase="Paused"), timeout=60)
    assert created.fired.is_set() and hung_write.applied == 1, "the write after the canary's creation hung"
    [hung] = fault_proxy.hung()
    answered = fault_proxy.answered(writes_of(namespace, "shop"), after=hung.at)
    assert answered, f"no write of shop answered after {hung}: {fault_proxy.exchanges[-40:]}"
    moved = answered[0]
    scene = (
        f"{hang}: {hung.verb} {hung.path} sent {hung.at - updated:.1f}s after the update and hung; shop "
        f"wrote again {moved.at - hung.at:.1f}s later ({moved.verb} {moved.path}); cart's "
        f"{TIMED_PAUSE:g}s pause ended {decided:+.2f}s (seen {seen:+.2f}s) from its end, "
        f"{monotonic_of(pause_ends) - hung.at:+.1f}s after the hang"
    )
    print(f"\n{scene}")
    assert hung.at <= monotonic_of(pause_ends) <= moved.at, (
        f"cart's pause ended while shop's write hung: {scene}"
    )
    assert REQUEST_TIMEOUT <= moved.at - hung.at < REQUEST_TIMEOUT + 10
    assert -0.05 <= decided < ON_TIME and seen < ON_TIME, "cart's pause ended on time"

    story.kubectl("annotate", "release", "shop", "shepherd.dev/promote=true")
    final = story.wait("shop promoted", phase("Succeeded"), timeout=60)
    assert final["version"] == "1.1.0"
    assert story.images() == {"shop-api": "ghcr.io/example/shop-api:1.1.0"}
    timeline.stop()
    assert not timeline.violations(aborted=False), "the rollout never went backwards"
    promotes = [c for c in final.get("commands") or [] if c["annotation"] == "shepherd.dev/promote"]
    assert len(promotes) == 1, promotes


ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="{{namespace}}",release="{{release}}",version="{{version}}",'
    'code=~"5.."}[5s])) / sum(rate(http_requests_total{namespace="{{namespace}}",release="{{release}}",'
    'version="{{version}}"}[5s]))'
)
# consecutiveErrorLimit: the sixth error in a row rolls back, some 15s of queries (2s each, 1s apart)
# after the first: long enough to cover the other Release's pause's end.
ERROR_LIMIT = 5
SLOW_ANSWER = 60.0


def analysed(version: str, prometheus: str) -> dict[str, Any]:
    """Release `slow`: analysis after setWeight 50, two metrics, so that each measurement holds both
    outside threads until its queries time out."""
    metrics = [
        {"name": name, "query": ERROR_RATE, "max": 0.05, "count": 50, "consecutiveErrorLimit": ERROR_LIMIT}
        for name in ("error-rate", "error-rate-again")
    ]
    return release(
        "slow",
        version,
        [{"setWeight": 50}, {"analysis": {}}, {"setWeight": 75}],
        analysis={
            "prometheus": {"address": prometheus, "timeout": f"{REQUEST_TIMEOUT:g}s"},
            "interval": "1s",
            "metrics": metrics,
        },
    )


def test_a_prometheus_answering_after_a_minute_costs_its_release_errors_and_no_one_else_time(
    story: Story, other: Story, prometheus: PrometheusServer
) -> None:
    with FaultProxy(prometheus.url, None) as slow_prometheus:
        story.apply(analysed("1.0.0", slow_prometheus.url))
        cart = TimedPause(other)
        story.wait_phase("Succeeded", revision=1, name="slow")
        pause_ends = cart.start()
        story.apply(analysed("1.1.0", slow_prometheus.url))
        # Prometheus checked the revision's queries: it answers after a minute from now on.
        story.wait_phase("Progressing", revision=2, name="slow")
        slow = fault(delay=SLOW_ANSWER)
        slow_prometheus.inject(slow)
        decided, seen = cart.lateness()
        final = story.wait("slow rolled back", phase("RolledBack"), "slow", timeout=90)
        queried = slow.applied
    failed = [r for r in final["analysis"] if r["result"] == "Error"]
    first_error, rolled_back = min(stamp(r["at"]) for r in failed), stamp(final["phaseSince"])
    print(
        f"\n{queried} queries held {SLOW_ANSWER:g}s; {len(failed)} errors recorded, rolled back "
        f"{rolled_back - first_error:.1f}s after the first; cart's {TIMED_PAUSE:g}s pause ended "
        f"{decided:+.2f}s (seen {seen:+.2f}s) from its end, {pause_ends - first_error:.1f}s after the first "
        "slow query"
    )
    assert final["reason"] == "AnalysisError", final["message"]
    assert len(failed) >= ERROR_LIMIT + 1
    assert all(f"timed out after {REQUEST_TIMEOUT:g}s" in r["message"] for r in failed), failed
    assert queried >= 2 * (ERROR_LIMIT + 1), "the slow Prometheus held every query of both metrics"
    assert first_error < pause_ends < rolled_back, "cart's pause ended while slow's queries were out"
    assert -0.05 <= decided < ON_TIME and seen < ON_TIME, "cart's pause ended on time"
    assert {n: r for n, r in story.replicas("slow").items() if r} == {"slow-api": 2}


def errors(status: Mapping[str, Any]) -> int:
    return sum(1 for r in status.get("analysis") or [] if r.get("result") == "Error")


@pytest.mark.parametrize(
    "operator_args", [(f"--watch-idle-timeout={IDLE_TIMEOUT:g}s",)], indirect=True, ids=["idle-3s"]
)
def test_a_canary_ready_while_the_deployment_watch_is_silent_is_noticed_within_the_bound(
    story: Story, fault_proxy: FaultProxy, pods: PodSimulator
) -> None:
    steps = [{"setWeight": 50}, {"pause": {}}]
    story.apply(release("shop", "1.0.0", steps))
    story.wait_phase("Succeeded", revision=1)
    pods.set_behaviour("Deployment", story.namespace, "shop-api-canary", "never-ready")
    try:
        story.apply(release("shop", "1.1.0", steps))
        story.wait_until(
            "the canary created, its pods never ready",
            lambda: story.replicas().get("shop-api-canary", 0) > 0,
        )
        silent = fault("WATCH", path=r"/deployments$", silent=True, times=1)
        fault_proxy.inject(silent)
        fault_proxy.cut_watches(path=r"/deployments$")
        story.wait_until("the operator's Deployment watch back, silent", lambda: silent.applied == 1)
        went_silent = time.monotonic()
        assert story.status()["currentStep"] == 0, "still waiting for the canary"
    finally:
        pods.set_behaviour("Deployment", story.namespace, "shop-api-canary", None)
    story.wait_until("the canary ready on the API server", lambda: canary_ready(story))
    ready = time.monotonic()
    story.wait("shop at its indefinite pause", at_step(1, phase="Paused"), timeout=60)
    noticed = time.monotonic()
    print(
        f"\nthe canary was ready {ready - went_silent:.1f}s after the watch went silent and noticed "
        f"{noticed - ready:.1f}s later (bound: {IDLE_TIMEOUT:g}s idle + {RECONNECT_AND_PASS:g}s)"
    )
    assert noticed - went_silent >= IDLE_TIMEOUT, "not before the silent watch was dropped"
    assert noticed - ready <= IDLE_TIMEOUT + RECONNECT_AND_PASS
    assert fault_proxy.count("WATCH", r"/deployments$", injected=True) == 1
    assert fault_proxy.count("WATCH", r"/deployments$", injected=False) >= 2, "watched again"


def canary_ready(story: Story) -> bool:
    canary = story.apps.read_namespaced_deployment_status("shop-api-canary", story.namespace)
    return bool(canary.status.ready_replicas) and canary.status.ready_replicas == canary.spec.replicas
