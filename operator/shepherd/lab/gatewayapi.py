"""A stand-in gateway controller for the tests: it writes HTTPRoutes' status as a Gateway API
implementation would, on demand or by following every route.

For each parentRef of a route, `RouteStatusWriter` writes one `status.parents[]` entry under its own
`controllerName`, with the conditions `Accepted` and `ResolvedRefs` and their `observedGeneration`,
through the status subresource (read, change, replace with the read resourceVersion, again on a
conflict). Entries of other controllers are kept. It can accept a route (ResolvedRefs is False,
BackendNotFound, while a backendRef names a Service that does not exist, as a real gateway says),
reject it with a reason, report unresolved references, or lag: write an older generation than the
route's, as a gateway that has not yet seen the last change.

Started (`with RouteStatusWriter(...)`), it also follows every HTTPRoute of the cluster and answers each
new generation by the policy set for the route with `set_policy` (default: accept, after `delay`
seconds); the policy `HOLD` writes nothing, so the route's status stays where it was. Following, it looks
at the backends' Services every second, as a gateway watches them: one created or deleted changes
ResolvedRefs without a new generation of the route. Tests that follow routes set policies rather than
writing on demand, which the next answer would overwrite.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

from shepherd.kube import load_configuration
from shepherd.lab.watching import Lifecycle, follow, start_thread

Json = dict[str, Any]
RouteKey = tuple[str, str]  # namespace, name

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
CONTROLLER_NAME = "shepherd.dev/lab-gateway"
BACKEND_RECHECK = 1.0  # seconds between looks at every route's backend Services, when following

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What the gateway says of a route: each condition's status and reason, and a message."""

    accepted: str = "True"
    accepted_reason: str = "Accepted"
    resolved_refs: str = "True"
    resolved_refs_reason: str = "ResolvedRefs"
    message: str = ""


@dataclass(frozen=True)
class Written:
    """One status write: the route, and per condition type its (status, reason, observedGeneration);
    none when this controller's entries were cleared."""

    namespace: str
    name: str
    conditions: Mapping[str, tuple[str, str, int]]


ACCEPT = Verdict()
# Not a verdict: the route's status is left as it is, whatever its generation.
HOLD = Verdict(
    accepted="Unknown", accepted_reason="Hold", resolved_refs="Unknown", resolved_refs_reason="Hold"
)


def rejected(reason: str = "NotAllowedByListeners", message: str = "") -> Verdict:
    """Accepted=False with `reason` (the Gateway API's are NotAllowedByListeners,
    NoMatchingListenerHostname, NoMatchingParent, UnsupportedValue, Pending)."""
    return Verdict(accepted="False", accepted_reason=reason, message=message or f"rejected: {reason}")


def unresolved(reason: str = "BackendNotFound", message: str = "") -> Verdict:
    """ResolvedRefs=False with `reason` (BackendNotFound, InvalidKind, RefNotPermitted, ...)."""
    return Verdict(
        resolved_refs="False", resolved_refs_reason=reason, message=message or f"unresolved: {reason}"
    )


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parent_status(
    parent_ref: Mapping[str, Any],
    verdict: Verdict,
    generation: int,
    controller_name: str,
    previous: Mapping[str, Any] | None = None,
) -> Json:
    """One status.parents[] entry; a condition whose status did not change keeps its lastTransitionTime."""
    before = {c["type"]: c for c in (previous or {}).get("conditions") or []}
    message = verdict.message or "accepted by the lab gateway"

    def condition(kind: str, status: str, reason: str) -> Json:
        old = before.get(kind)
        since = old["lastTransitionTime"] if old and old.get("status") == status else now_rfc3339()
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }

    return {
        "parentRef": dict(parent_ref),
        "controllerName": controller_name,
        "conditions": [
            condition("Accepted", verdict.accepted, verdict.accepted_reason),
            condition("ResolvedRefs", verdict.resolved_refs, verdict.resolved_refs_reason),
        ],
    }


def route_status(route: Mapping[str, Any], verdict: Verdict, generation: int, controller_name: str) -> Json:
    """The route's status with this controller's entry for each parentRef, other controllers' kept."""
    parents = [p for p in (route.get("status") or {}).get("parents") or []]
    mine = {
        json.dumps(p["parentRef"], sort_keys=True): p
        for p in parents
        if p["controllerName"] == controller_name
    }
    others = [p for p in parents if p["controllerName"] != controller_name]
    written = [
        parent_status(
            ref, verdict, generation, controller_name, mine.get(json.dumps(dict(ref), sort_keys=True))
        )
        for ref in (route.get("spec") or {}).get("parentRefs") or []
    ]
    return {"parents": others + written}


def entries_of(route: Mapping[str, Any], controller_name: str = CONTROLLER_NAME) -> list[Json]:
    """The status.parents[] entries that controller_name wrote."""
    return [
        p
        for p in (route.get("status") or {}).get("parents") or []
        if p.get("controllerName") == controller_name
    ]


class RouteStatusWriter(Lifecycle):
    """Writes HTTPRoutes' status for the API server of `kubeconfig`, as gateway controller `controller_name`;
    started, it follows the routes of `namespace` (default: every namespace).

    With `check_backends`, accepting a route reports ResolvedRefs=False when a backendRef is not a core
    Service or names a Service that does not exist in its namespace."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        context: str | None = None,
        controller_name: str = CONTROLLER_NAME,
        check_backends: bool = True,
        delay: float = 0.0,
        namespace: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.controller_name = controller_name
        self.check_backends = check_backends
        self.delay = delay
        self._client = kubernetes.client.ApiClient(load_configuration(str(kubeconfig), context))
        self._custom: Any = kubernetes.client.CustomObjectsApi(self._client)
        self._core: Any = kubernetes.client.CoreV1Api(self._client)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._policies: dict[RouteKey, Verdict] = {}
        self._due: list[tuple[float, int, RouteKey]] = []
        self._known: set[RouteKey] = set()
        self._sequence = itertools.count()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Each status written: namespace, name, and per condition type its status, reason and generation
        # (of the first parentRef's entry; every entry says the same).
        self.writes: list[Written] = []

    # On demand.

    def accept(self, namespace: str, name: str, *, generation: int | None = None) -> Json:
        """Accepted=True (and ResolvedRefs as the backends are) at `generation` (default: the route's)."""
        return self.write(namespace, name, ACCEPT, generation=generation)

    def reject(
        self, namespace: str, name: str, reason: str = "NotAllowedByListeners", message: str = ""
    ) -> Json:
        return self.write(namespace, name, rejected(reason, message))

    def lag(self, namespace: str, name: str, generation: int) -> Json:
        """Accept the route as it was at an older `generation`: its observedGeneration stays behind."""
        return self.write(namespace, name, ACCEPT, generation=generation)

    def write(
        self,
        namespace: str,
        name: str,
        verdict: Verdict,
        *,
        generation: int | None = None,
        attempts: int = 10,
    ) -> Json:
        """Write this controller's entries of the route's status; returns the route as the server answered."""
        for _ in range(attempts):
            route = self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            answer = self._write_status(route, verdict, generation)
            if answer is not None:
                return answer
        raise RuntimeError(
            f"HTTPRoute {namespace}/{name}: {attempts} conflicting writes of its status in a row"
        )

    def clear(self, namespace: str, name: str, *, attempts: int = 10) -> Json:
        """Remove this controller's entries from the route's status."""
        for _ in range(attempts):
            route = self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            parents = (route.get("status") or {}).get("parents") or []
            kept = [p for p in parents if p["controllerName"] != self.controller_name]
            answer = self._replace_status(route, {"parents": kept})
            if answer is not None:
                return answer
        raise RuntimeError(
            f"HTTPRoute {namespace}/{name}: {attempts} conflicting writes of its status in a row"
        )

    # Following every route.

    def set_policy(self, namespace: str, name: str, verdict: Verdict | None) -> None:
        """How the following writer answers route namespace/name from now on (None: accept); HOLD writes
        nothing. The route is answered again at once."""
        with self._wake:
            if verdict is None:
                self._policies.pop((namespace, name), None)
            else:
                self._policies[(namespace, name)] = verdict
            self._schedule((namespace, name), time.monotonic())

    def start(self) -> None:
        listed = threading.Event()

        def watch() -> None:
            follow(
                self._list,
                self._on_event,
                listed=listed,
                stopping=self._stopping,
                what="HTTPRoute",
                reset=self._reset,
            )

        start_thread(watch, "routes-watch", self._threads)
        start_thread(self._work, "routes-work", self._threads)
        if not listed.wait(30):
            raise RuntimeError("the route status writer could not list HTTPRoutes within 30 s")

    def stop(self) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=2)
        self._client.close()  # type: ignore[no-untyped-call]

    def _verdict(self, route: Mapping[str, Any], verdict: Verdict) -> Verdict:
        """An acceptance says what a gateway would of the route's backends."""
        if verdict == ACCEPT and self.check_backends:
            return self._backends_verdict(route["metadata"]["namespace"], route)
        return verdict

    def _write_status(self, route: Json, verdict: Verdict, generation: int | None) -> Json | None:
        """One replace of the route's status from `route` as read; None when another write came first."""
        generation = generation or route["metadata"]["generation"]
        return self._replace_status(
            route, route_status(route, self._verdict(route, verdict), generation, self.controller_name)
        )

    def _replace_status(self, route: Json, status: Json) -> Json | None:
        metadata = route["metadata"]
        try:
            answer = self._custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, metadata["namespace"], PLURAL, metadata["name"], {**route, "status": status}
            )
        except kubernetes.client.ApiException as error:
            if error.status == 409:
                return None
            raise
        mine = entries_of({"status": status}, self.controller_name)
        said = (
            {c["type"]: (c["status"], c["reason"], c["observedGeneration"]) for c in mine[0]["conditions"]}
            if mine
            else {}
        )
        with self._lock:
            self.writes.append(Written(metadata["namespace"], metadata["name"], said))
        return dict(answer)

    def _backends_verdict(self, namespace: str, route: Mapping[str, Any]) -> Verdict:
        for rule in (route.get("spec") or {}).get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
                    return unresolved("InvalidKind", f"{ref.get('kind')} {ref['name']} is not a core Service")
                where = ref.get("namespace", namespace)
                try:
                    self._core.read_namespaced_service(ref["name"], where, _preload_content=False)
                except kubernetes.client.ApiException as error:
                    if error.status != 404:
                        raise
                    return unresolved("BackendNotFound", f"Service {where}/{ref['name']} not found")
        return ACCEPT

    def _schedule(self, key: RouteKey, at: float) -> None:
        heapq.heappush(self._due, (at, next(self._sequence), key))
        self._wake.notify()

    def _reset(self) -> None:
        with self._wake:
            self._known.clear()

    def _on_event(self, kind: str, route: Json) -> None:
        with self._wake:
            if kind == "DELETED":
                self._known.discard((route["metadata"]["namespace"], route["metadata"]["name"]))
            else:
                self._see(route)

    def _list(self, **options: Any) -> Any:
        if self.namespace is None:
            return self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **options)
        return self._custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, **options)

    def _see(self, route: Json) -> None:
        """Answer a route whose generation this controller has not yet written (after the delay)."""
        metadata = route["metadata"]
        self._known.add((metadata["namespace"], metadata["name"]))
        observed = [
            c.get("observedGeneration", 0)
            for p in entries_of(route, self.controller_name)
            for c in p["conditions"]
        ]
        if not observed or min(observed) < metadata["generation"]:
            self._schedule((metadata["namespace"], metadata["name"]), time.monotonic() + self.delay)

    def _work(self) -> None:
        recheck = time.monotonic() + BACKEND_RECHECK
        while not self._stopping.is_set():
            with self._wake:
                while not self._stopping.is_set() and (not self._due or self._due[0][0] > time.monotonic()):
                    now = time.monotonic()
                    if self.check_backends and now >= recheck:
                        # A gateway follows Services too: a backend that appears or goes away is noticed
                        # without a new generation of the route.
                        for known in self._known:
                            self._schedule(known, now)
                        recheck = now + BACKEND_RECHECK
                        continue
                    wakes = [self._due[0][0]] if self._due else []
                    wakes += [recheck] if self.check_backends else []
                    self._wake.wait(min(wakes) - now if wakes else None)
                if self._stopping.is_set():
                    return
                _, _, key = heapq.heappop(self._due)
                verdict = self._policies.get(key, ACCEPT)
            if verdict == HOLD:
                continue
            try:
                route = self._custom.get_namespaced_custom_object(GROUP, VERSION, key[0], PLURAL, key[1])
                answer = self._answer(route, verdict)
                if answer is None:
                    with self._wake:
                        self._schedule(key, time.monotonic())
            except kubernetes.client.ApiException as error:
                if error.status != 404:
                    logger.warning("HTTPRoute %s/%s: %s", key[0], key[1], error.reason)
                    with self._wake:
                        self._schedule(key, time.monotonic() + 0.5)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                logger.warning("HTTPRoute %s/%s: %s", key[0], key[1], error)
                with self._wake:
                    self._schedule(key, time.monotonic() + 0.5)

    def _answer(self, route: Json, verdict: Verdict) -> Verdict | None:
        """Write the verdict unless this controller's entries already say it at the route's generation, for
        every parentRef; the verdict said, or None when another write came first."""
        verdict = self._verdict(route, verdict)
        wanted = route_status(route, verdict, route["metadata"]["generation"], self.controller_name)
        written = _conditions(entries_of(route, self.controller_name))
        if written == _conditions(entries_of({"status": wanted}, self.controller_name)):
            return verdict
        return verdict if self._replace_status(route, wanted) is not None else None


def _conditions(entries: Sequence[Mapping[str, Any]]) -> list[Any]:
    return sorted(
        (
            json.dumps(e["parentRef"], sort_keys=True),
            [(c["type"], c["status"], c["reason"], c.get("observedGeneration")) for c in e["conditions"]],
        )
        for e in entries
    )
