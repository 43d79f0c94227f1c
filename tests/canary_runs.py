"""A small whole canary run by the real operator through the fault proxy, watched as the admin.

One Release of one component (2 replicas) goes from revision 1 to revision 2 through `setWeight: 50`, a
timed pause of 1s and an indefinite pause, where a person promotes (or aborts) it once; bake 1s. The
operator runs `shepherd run` with the chart's arguments and ServiceAccount token (one run at a time), and
talks to the API server through a `FaultProxy`. A `Timeline` watches the Release and its
Deployments as the admin, straight from the API server, and keeps every version of them in the order the
server wrote them (by resourceVersion), so the properties are checked on every state there was, not on
samples:

- within revision 2, `status.canaryWeight` and the canary's replicas never decrease, except once a
  rollback began (the status says RollingBack or RolledBack; the operator writes it before it acts) or,
  for the replicas, once stable took revision 2's template (the promotion's last step);
- once stable took revision 2's template it never gets revision 1's back (no rollback was asked), and an
  aborted canary never reaches stable at all;
- the command is acted on once: recorded once in `status.commands` and in the revision's history, and its
  annotation removed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

from shepherd.lab.cluster import InstalledChart, OperatorProcess
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.faultproxy import FaultProxy, route_through
from story import GROUP, VERSION, quickstart_release

RELEASE = "shop"
CANARY, STABLE = f"{RELEASE}-api-canary", f"{RELEASE}-api"
REVISION_LABEL = "shepherd.dev/revision"
STEPS = [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"pause": {}}]
INDEFINITE_PAUSE = 2  # the step index of `pause: {}`
ROLLING_BACK = ("RollingBack", "RolledBack")
TIMEOUT = 60.0


def small_release(version: str) -> dict[str, Any]:
    release = quickstart_release(version, strategy={"canary": {"steps": STEPS}}, postRelease={"bake": "1s"})
    api = release["spec"]["components"][0]
    api["replicas"] = 2
    release["spec"]["components"] = [api]
    return release


def image(version: str) -> str:
    return f"ghcr.io/example/shop-api:{version}"


def chart_arg(chart: InstalledChart, flag: str) -> str:
    return next(a.split("=", 1)[1] for a in chart.args if a.startswith(f"{flag}="))


@dataclass
class Violation:
    resource_version: int
    what: str

    def __str__(self) -> str:
        return f"at resourceVersion {self.resource_version}: {self.what}"


@dataclass
class Timeline:
    """Every version of the Release and its Deployments the API server wrote, watched as the admin."""

    admin: kubernetes.client.ApiClient
    namespace: str
    versions: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)  # rv, kind, type, obj
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def start(self) -> None:
        custom = kubernetes.client.CustomObjectsApi(self.admin)
        apps = kubernetes.client.AppsV1Api(self.admin)
        lists: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
            "Release": (custom.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, "releases")),
            "Deployment": (apps.list_namespaced_deployment, (self.namespace,)),
        }
        started = []
        for kind, (lister, args) in lists.items():
            listed = json.loads(lister(*args, _preload_content=False).data)
            rv = listed["metadata"]["resourceVersion"]
            with self.lock:
                self.versions.extend(
                    (int(o["metadata"]["resourceVersion"]), kind, "LISTED", o) for o in listed["items"]
                )
            ready = threading.Event()
            thread = threading.Thread(
                target=self._watch, args=(kind, lister, args, rv, ready), daemon=True, name=f"watch-{kind}"
            )
            thread.start()
            started.append(ready)
        for ready in started:
            ready.wait(timeout=10)

    def stop(self) -> None:
        self.stopping.set()

    def _watch(
        self, kind: str, lister: Callable[..., Any], args: tuple[Any, ...], rv: str, ready: threading.Event
    ) -> None:
        while not self.stopping.is_set():
            watch = kubernetes.watch.Watch()
            try:
                ready.set()
                for event in watch.stream(lister, *args, resource_version=rv, timeout_seconds=5):
                    obj = event["raw_object"]
                    if event["type"] == "ERROR":
                        self.errors.append(str(obj))
                        return
                    if event["type"] == "BOOKMARK":
                        continue
                    rv = obj["metadata"]["resourceVersion"]
                    with self.lock:
                        self.versions.append((int(rv), kind, event["type"], obj))
                    if self.stopping.is_set():
                        watch.stop()
            except Exception as error:
                if self.stopping.is_set():
                    return
                self.errors.append(f"{kind} watch: {error!r}")
                time.sleep(0.1)

    def seen(self, kind: str, name: str) -> int:
        with self.lock:
            return max(
                (rv for rv, k, _, o in self.versions if k == kind and o["metadata"]["name"] == name),
                default=0,
            )

    def caught_up(self, current: Mapping[tuple[str, str], int]) -> bool:
        return all(self.seen(kind, name) >= rv for (kind, name), rv in current.items())

    def ordered(self) -> list[tuple[int, str, str, dict[str, Any]]]:
        with self.lock:
            return sorted(self.versions, key=lambda v: v[0])

    def violations(self, *, aborted: bool) -> list[Violation]:
        found: list[Violation] = []
        weight = 0
        canary = 0
        rolling_back = False
        stable_took_2 = False
        for rv, kind, kind_of_event, obj in self.ordered():
            name = obj["metadata"]["name"]
            if kind == "Release":
                status = obj.get("status") or {}
                if status.get("revision") != 2:
                    continue
                if status.get("phase") in ROLLING_BACK:
                    rolling_back = True
                    continue
                current = int(status.get("canaryWeight") or 0)
                if current < weight:
                    found.append(Violation(rv, f"canaryWeight went from {weight} to {current} in revision 2"))
                weight = max(weight, current)
                continue
            template = obj["spec"]["template"]
            revision = int(template["metadata"]["labels"][REVISION_LABEL])
            if name == STABLE:
                if revision == 2 and not stable_took_2:
                    stable_took_2 = True
                    if aborted:
                        found.append(Violation(rv, "stable took revision 2's template in an aborted canary"))
                elif revision < 2 and stable_took_2:
                    found.append(Violation(rv, f"stable went back to revision {revision}'s template"))
                    stable_took_2 = False
            elif name == CANARY and revision == 2:
                replicas = 0 if kind_of_event == "DELETED" else int(obj["spec"].get("replicas") or 0)
                if replicas < canary and not (rolling_back or stable_took_2):
                    found.append(Violation(rv, f"canary replicas went from {canary} to {replicas}"))
                canary = max(canary, replicas)
        return found


class Shepherd:
    """The operator through `proxy`, kept across runs, as the chart runs it: a leader and a standby, each
    `shepherd run` with the chart's arguments. A kill point SIGKILLs the leader, lets go of its Lease as
    the admin (as if it had expired: the takeover's wait is another story's), and the standby, a process
    that never acted, leads at once; a new standby starts."""

    def __init__(
        self,
        control_plane: ControlPlane,
        chart: InstalledChart,
        admin: kubernetes.client.ApiClient,
        proxy: FaultProxy,
        workdir: Path,
    ) -> None:
        self.control_plane = control_plane
        self.admin = admin
        self.proxy = proxy
        self.chart = chart
        self.workdir = workdir
        self.coordination = kubernetes.client.CoordinationV1Api(admin)
        self.started = 0
        self.operator = self._operator()
        self.standby = self._operator()
        self.restarts = 0
        self._next: CanaryRun | None = None

    def _operator(self) -> OperatorProcess:
        process = OperatorProcess(
            self.control_plane, self.chart, self.workdir, identity=f"shepherd-{self.started}"
        )
        route_through(process, self.proxy)
        self.started += 1
        return process

    def __enter__(self) -> Shepherd:
        self.operator.start()
        self.standby.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.standby.kill()
        self.operator.kill()
        self.let_go_of_the_lease()
        if self._next is not None:
            self._next.timeline.stop()
            self._next.core.delete_namespace(self._next.namespace, propagation_policy="Background")

    def let_go_of_the_lease(self) -> None:
        self.coordination.patch_namespaced_lease(
            chart_arg(self.chart, "--lease-name"),
            chart_arg(self.chart, "--lease-namespace"),
            {"spec": {"holderIdentity": None}},
        )

    def restart(self) -> None:
        """SIGKILL the leader; the standby takes over (on the proxy's thread, from a kill point)."""
        self.operator.kill()
        self.let_go_of_the_lease()
        self.operator, self.standby = self.standby, self._operator()
        self.standby.start()
        self.restarts += 1

    def logs(self, lines: int = 60) -> str:
        """The last lines of the leader's log, for a failure's message."""
        return "\n".join(self.operator.output().splitlines()[-lines:])

    @contextmanager
    def run(self) -> Iterator[CanaryRun]:
        """A run in a fresh namespace whose revision 1 was created while the run before went on; only the
        writes in its namespace are counted for a kill point."""
        run = self._next or CanaryRun(self)
        self._next = CanaryRun(self)
        self.proxy.writes_pattern = f"/namespaces/{run.namespace}/"
        try:
            yield run
        finally:
            run.timeline.stop()
            self.proxy.clear()
            run.core.delete_namespace(run.namespace, propagation_policy="Background")


class CanaryRun:
    """One run of the small canary in a namespace of its own, created with revision 1 of the Release."""

    def __init__(self, shepherd: Shepherd) -> None:
        self.shepherd = shepherd
        self.proxy = shepherd.proxy
        self.custom = kubernetes.client.CustomObjectsApi(shepherd.admin)
        self.apps = kubernetes.client.AppsV1Api(shepherd.admin)
        self.core = kubernetes.client.CoreV1Api(shepherd.admin)
        self.namespace = f"fault-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": self.namespace}})
        self.timeline = Timeline(shepherd.admin, self.namespace)
        self.timeline.start()
        self.timeout = TIMEOUT  # each wait's deadline
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "releases", small_release("1.0.0")
        )

    def release(self) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "releases", RELEASE)
        )

    def wait(
        self, what: str, predicate: Callable[[Mapping[str, Any]], bool], timeout: float | None = None
    ) -> dict[str, Any]:
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        release: dict[str, Any] = {}
        while time.monotonic() < deadline:
            release = self.release()
            if predicate(release):
                return release
            popen = self.shepherd.operator.popen
            code = popen.poll() if popen is not None else None
            assert code in (None, -9), f"the operator exited with {code} while waiting for {what}"
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {release.get('status')}")

    def update(self, version: str) -> None:
        spec = small_release(version)["spec"]
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "releases", RELEASE, {"spec": spec}
        )

    def annotate(self, command: str) -> None:
        annotations = {f"shepherd.dev/{command}": "true"}
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "releases", RELEASE, {"metadata": {"annotations": annotations}}
        )

    def deployments(self) -> dict[str, dict[str, Any]]:
        listed = self.apps.list_namespaced_deployment(self.namespace, _preload_content=False)
        return {d["metadata"]["name"]: d for d in json.loads(listed.data)["items"]}

    def settle(self) -> None:
        """Wait until the timeline saw the latest version of the Release and of every Deployment."""
        current = {("Release", RELEASE): int(self.release()["metadata"]["resourceVersion"])}
        for name, deployment in self.deployments().items():
            current[("Deployment", name)] = int(deployment["metadata"]["resourceVersion"])
        deadline = time.monotonic() + 20
        while not self.timeline.caught_up(current):
            assert time.monotonic() < deadline, f"the admin's watches never saw {current}"
            time.sleep(0.05)


def at_indefinite_pause(release: Mapping[str, Any]) -> bool:
    status = release.get("status") or {}
    return (
        status.get("revision") == 2
        and status.get("phase") == "Paused"
        and status.get("currentStep") == INDEFINITE_PAUSE
    )


def phase_is(phase: str, revision: int) -> Callable[[Mapping[str, Any]], bool]:
    def check(release: Mapping[str, Any]) -> bool:
        status = release.get("status") or {}
        return status.get("phase") == phase and status.get("revision") == revision

    return check


def command_closed(command: str) -> Callable[[Mapping[str, Any]], bool]:
    """The command's annotation removed and its acknowledgement closed."""

    def check(release: Mapping[str, Any]) -> bool:
        annotations = release["metadata"].get("annotations") or {}
        commands = (release.get("status") or {}).get("commands") or []
        return f"shepherd.dev/{command}" not in annotations and all(not c.get("open") for c in commands)

    return check


def drive(
    run: CanaryRun, command: str, kill_at: int | None = None, *, keep_counts: bool = False
) -> tuple[list[str], bool]:
    """The whole canary: revision 1, then revision 2 to its indefinite pause, the command given once, the
    end. The kill point (and the count of writes, unless `keep_counts`) starts at revision 2's update.
    Returns the problems found, and whether the operator was killed (it may write less than k times)."""
    run.wait("revision 1 Succeeded", phase_is("Succeeded", 1))
    point = run.proxy.kill_at(kill_at, run.shepherd.restart) if kill_at is not None else None
    if point is None and not keep_counts:
        run.proxy.reset_counts()
    run.update("1.1.0")
    run.wait("the indefinite pause of revision 2", at_indefinite_pause)
    run.annotate(command)
    if command == "promote":
        final = run.wait("revision 2 Succeeded", phase_is("Succeeded", 2))
    else:
        final = run.wait("revision 2 RolledBack", phase_is("RolledBack", 2))
    final = run.wait(f"the {command} annotation removed and closed", command_closed(command))
    run.settle()
    problems = [str(v) for v in run.timeline.violations(aborted=command == "abort")]
    return problems + final_problems(run, final, command), point is not None and point.fired.is_set()


def final_problems(run: CanaryRun, release: dict[str, object], command: str) -> list[str]:
    problems = []
    status = release["status"]
    assert isinstance(status, dict)
    acts = [c for c in status.get("commands") or [] if c["annotation"] == f"shepherd.dev/{command}"]
    if len(acts) != 1:
        problems.append(f"the {command} was acknowledged {len(acts)} times: {acts}")
    recorded = [c for c in status["history"][-1].get("commands") or [] if c.get("action") == command]
    if len(recorded) != 1:
        problems.append(f"revision 2's history records the {command} {len(recorded)} times: {recorded}")
    deployments = run.deployments()
    images = {n: d["spec"]["template"]["spec"]["containers"][0]["image"] for n, d in deployments.items()}
    replicas = {n: d["spec"]["replicas"] for n, d in deployments.items() if d["spec"]["replicas"]}
    version = "1.1.0" if command == "promote" else "1.0.0"
    if images.get(f"{RELEASE}-api") != image(version) or replicas != {f"{RELEASE}-api": 2}:
        problems.append(
            f"final Deployments {images} at {replicas}, not {RELEASE}-api alone on {version} at 2"
        )
    return problems
