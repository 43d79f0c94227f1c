"""Scale on the real control plane: many one-component Releases on one operator replica.

For each N (one-component Releases, 1 replica each, spread over namespaces of 100):
1. rollout: apply all N, time until every one is Succeeded;
2. idle: a window of two resyncs with nothing changing: the operator's API requests per second by
   verb (from the API server's audit log, so nothing the operator counts itself), its RSS and CPU, and
   the CPU of one resync of an unchanged Release (its idle CPU over the passes that found nothing
   changed, by its own shepherd_reconcile_skipped_total);
3. change latency: 20 times (--samples), a new version applied to one Release until its canary
   Deployment exists;
4. due-step latency: 20 times, how late the step after a 1s pause starts (the status' stepSince of the
   next step minus the pause's stepSince + 1s, both written by the operator);
5. writes per canary step on one Release (POST/PUT/PATCH/DELETE in the audit log, per step taken).

The operator runs as `shepherd run` with the chart's arguments and ServiceAccount token; the pod simulator
marks pods ready. The resync is the chart's default unless --resync says otherwise. Needs `make
cluster-binaries`. With --smoke: 6 Releases, resync 2s, 3 samples.
Run: make bench   (or .venv/bin/python bench/scale.py --releases 1000 5000)
"""

from __future__ import annotations

import collections
import functools
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import durationpy
import kubernetes
import urllib3
import yaml

from benchlib import (
    REPO,
    Process,
    admin_client,
    fail,
    need_control_plane,
    parser,
    spread,
    stamp,
    wait_for,
    wait_until_admitted,
)
from shepherd.lab.cluster import OperatorProcess, install_chart
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.podsim import PodSimulator

GROUP, VERSION, PLURAL = "shepherd.dev", "v1alpha1", "releases"
PER_NAMESPACE = 100
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


@dataclass(frozen=True)
class Size:
    releases: list[int]  # one run per number of Releases
    resync: str  # the operator's safety-net resync; the idle window is two of them
    samples: int  # changes, and due steps, measured


# What users run: the chart's default resync, unless told otherwise.
CHART_RESYNC = str(yaml.safe_load((REPO / "charts" / "shepherd" / "values.yaml").read_text())["resync"])
FULL = Size(releases=[1000], resync=CHART_RESYNC, samples=20)
SMOKE = Size(releases=[6], resync="2s", samples=3)


def release(
    name: str, namespace: str, version: str, steps: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    container = {"name": "app", "image": f"registry.example/app:{version}"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": PLURAL[:-1].capitalize(),
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "version": version,
            "components": [{"name": "app", "replicas": 1, "template": {"spec": {"containers": [container]}}}],
            "strategy": {"canary": {"steps": steps or [{"setWeight": 50}, {"pause": {}}]}},
            # The simulated pods of thousands of Releases can take longer than the default 10m to be ready:
            # what is measured is the operator, not the pod simulator.
            "progressDeadline": "1h",
        },
    }


def canary_exists(apps: Any, namespace: str, name: str) -> bool:
    try:
        apps.read_namespaced_deployment(f"{name}-app-canary", namespace)
    except kubernetes.client.ApiException:
        return False
    return True


def at_the_hold(custom: Any, namespace: str, name: str, seen: dict[int, float]) -> bool:
    """Whether revision 2 holds at its indefinite pause; records when each step started (stepSince)."""
    status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
    if status.get("revision") == 2 and status.get("stepSince"):
        seen.setdefault(status.get("currentStep", -1), stamp(status["stepSince"]))
    return bool(
        status.get("revision") == 2 and status.get("phase") == "Paused" and status.get("currentStep") == 2
    )


# What a revision's start writes once, whatever its steps: its record, its canary, and two Events,
# NewRevision and the Progressing it enters (these steps never enter Progressing again: the hold is last).
REVISION_START = {
    "create controllerrevisions",
    "create deployments",
    "create events NewRevision",
    "create events Progressing",
}


def write_kind(event: dict[str, Any]) -> str:
    ref = event["objectRef"]
    kind = f"{event['verb']} {ref.get('resource', '')}" + (
        f"/{ref['subresource']}" if ref.get("subresource") else ""
    )
    reason = (event.get("requestObject") or {}).get("reason")
    return f"{kind} {reason}" if ref.get("resource") == "events" and reason else kind


def writes_by_step(
    writes: Sequence[dict[str, Any]], started: dict[int, float], steps: int
) -> dict[int, collections.Counter[str]]:
    """Each write counted against the step under way when the API server received it: from the step's
    stepSince to the next one's (a step's own status write comes just after its stepSince)."""
    counted: dict[int, collections.Counter[str]] = {i: collections.Counter() for i in range(steps)}
    for event in writes:
        received = stamp(event["requestReceivedTimestamp"])
        step = max((i for i, since in started.items() if 0 <= i < steps and since <= received), default=0)
        counted[step][write_kind(event)] += 1
    return counted


def picked(names: Sequence[tuple[str, str]], samples: int) -> tuple[list[tuple[str, str]], ...]:
    """Two disjoint sets of `samples` Releases spread over all: to change, and to step through a due pause
    (each of those must still be at its first revision)."""
    if len(names) < 2 * samples:
        fail(f"{len(names)} Releases are too few for {samples} samples of each kind")
    spacing = len(names) / (2 * samples)
    return tuple([names[int((2 * i + first) * spacing)] for i in range(samples)] for first in (0, 1))


def skipped_passes(operator: OperatorProcess) -> float:
    """The operator's own count of passes that found nothing changed (shepherd_reconcile_skipped_total)."""
    port = next(a.split("=", 1)[1] for a in operator.args if a.startswith("--metrics-port="))
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = re.search(r"^shepherd_reconcile_skipped_total ([0-9.e+]+)$", text, re.MULTILINE)
    if found is None:
        fail("the operator's /metrics has no shepherd_reconcile_skipped_total")
    return float(found.group(1))


def bench(count: int, resync: str, samples: int, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"releases": count}
    with (
        ControlPlane(need_control_plane(), workdir, audit=True) as plane,
        PodSimulator(plane.kubeconfig, workers=8),
        admin_client(plane.kubeconfig) as admin,
    ):
        chart = install_chart(plane, REPO / "charts" / "shepherd", values={"resync": resync})
        operator_user = f"system:serviceaccount:{chart.namespace}:{chart.service_account}"
        core: Any = kubernetes.client.CoreV1Api(admin)
        custom: Any = kubernetes.client.CustomObjectsApi(admin)
        apps = kubernetes.client.AppsV1Api(admin)
        namespaces = [f"scale-{i}" for i in range((count + PER_NAMESPACE - 1) // PER_NAMESPACE)]
        for namespace in namespaces:
            core.create_namespace({"metadata": {"name": namespace}})
        names = [(namespaces[i // PER_NAMESPACE], f"app-{i}") for i in range(count)]

        with OperatorProcess(plane, chart, workdir) as operator:
            assert operator.popen is not None
            process = Process(operator.popen.pid)
            wait_until_admitted(custom, release(names[0][1], names[0][0], "1"))
            started = time.monotonic()
            # Several at once, as a GitOps sync of many Releases would.
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(
                    pool.map(
                        lambda key: custom.create_namespaced_custom_object(
                            GROUP, VERSION, key[0], PLURAL, release(key[1], key[0], "1")
                        ),
                        names,
                    )
                )
            results["apply_seconds"] = time.monotonic() - started

            def succeeded() -> bool:
                """Counted page by page: one list of 10,000 Releases under load can outlast its request."""
                done, token = 0, None
                try:
                    while True:
                        page = custom.list_cluster_custom_object(
                            GROUP, VERSION, PLURAL, limit=500, _continue=token
                        )
                        done += sum(
                            (r.get("status") or {}).get("phase") == "Succeeded" for r in page["items"]
                        )
                        token = page["metadata"].get("continue")
                        if not token:
                            return bool(done == count)
                except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError):
                    return False  # counted again at the next poll

            wait_for(f"{count} Releases to succeed", succeeded, timeout=60 + count * 0.5, poll=1.0)
            results["all_succeeded_seconds"] = time.monotonic() - started

            window = 2 * durationpy.from_str(resync).total_seconds() + 1
            skipped_before = skipped_passes(operator)
            cpu_before, window_start = process.cpu_seconds(), time.time()
            time.sleep(window)  # the idle window itself is what is measured, not a synchronisation
            cpu_used, window_end = process.cpu_seconds() - cpu_before, time.time()
            resyncs = skipped_passes(operator) - skipped_before
            idle = [
                e
                for e in plane.audited_requests(operator_user, window_start)
                if e["stage"] == "ResponseComplete"
            ]
            idle = [e for e in idle if stamp(e["requestReceivedTimestamp"]) <= window_end]
            span = window_end - window_start
            # The leader Lease's renewals are the replica's, not any Release's; watches stay open.
            lease = [e for e in idle if e["objectRef"].get("resource") == "leases"]
            by_verb = collections.Counter(
                f"{e['verb']} {e['objectRef'].get('resource', '')}"
                for e in idle
                if e["verb"] != "watch" and e["objectRef"].get("resource") != "leases"
            )
            results["idle_window_seconds"] = span
            results["idle_requests_per_second"] = {v: n / span for v, n in sorted(by_verb.items())}
            results["idle_requests_per_second_per_release"] = sum(by_verb.values()) / span / count
            results["idle_lease_requests_per_second"] = len(lease) / span
            results["idle_watch_requests"] = sum(1 for e in idle if e["verb"] == "watch")
            results["idle_cpu_share"] = cpu_used / (window_end - window_start)
            # Every resync of a Release at rest is a pass that finds nothing changed: what one costs, the
            # operator's whole idle CPU (its watches and its Lease included) shared among them.
            if resyncs < count:
                fail(f"{resyncs} unchanged passes of {count} Releases in two resyncs: the skip is not taken")
            results["idle_resyncs"] = resyncs
            results["idle_cpu_per_resync_us"] = cpu_used / resyncs * 1e6
            results["rss_mib"] = process.rss_mib()

            latencies = []
            to_change, to_step = picked(names, samples)
            for namespace, name in to_change:
                changed = time.monotonic()
                custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    {
                        "spec": {
                            "version": "2",
                            "components": release(name, namespace, "2")["spec"]["components"],
                        }
                    },
                )

                wait_for("a canary", functools.partial(canary_exists, apps, namespace, name), timeout=60)
                latencies.append(time.monotonic() - changed)
            results["change_to_canary_seconds"] = spread(latencies, "change to canary")

            lateness, step_writes = [], []
            written: collections.Counter[str] = collections.Counter()
            by_step: collections.defaultdict[int, collections.Counter[str]] = collections.defaultdict(
                collections.Counter
            )
            steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"pause": {}}]
            for namespace, name in to_step:
                before = time.time()
                body = release(name, namespace, "3", steps)
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, {"spec": body["spec"]}
                )
                seen: dict[int, float] = {}

                wait_for(
                    "the hold", functools.partial(at_the_hold, custom, namespace, name, seen), timeout=60
                )
                if 1 in seen:
                    lateness.append(seen[2] - (seen[1] + 1.0))
                writes = [
                    e
                    for e in plane.audited_requests(operator_user, before)
                    if e["stage"] == "ResponseComplete"
                    and e["verb"] in WRITES
                    and e["objectRef"].get("resource") != "leases"
                ]
                step_writes.append(len(writes) / len(steps))
                written.update(map(write_kind, writes))
                for step, kinds in writes_by_step(writes, seen, len(steps)).items():
                    by_step[step].update(kinds)
            results["due_step_lateness_seconds"] = spread(lateness, "due-step lateness")
            if not written:
                fail(f"no write of the operator in the audit log over {samples} rollouts")
            results["writes_per_canary_step"] = sum(step_writes) / len(step_writes)
            starting = sum(n for kind, n in written.items() if kind in REVISION_START)
            results["writes_per_revision_start"] = starting / samples
            results["writes_per_canary_step_besides_the_revision_start"] = (
                sum(written.values()) - starting
            ) / (samples * len(steps))
            results["writes_per_canary_step_by_kind"] = {
                kind: n / (samples * len(steps)) for kind, n in written.most_common()
            }
            # Step 1 also starts the revision (its ControllerRevision, the canary Deployment, its Events).
            results["writes_by_step"] = {
                f"{index + 1} {json.dumps(steps[index])}": {
                    "total": sum(by_step[index].values()) / samples,
                    **{kind: n / samples for kind, n in by_step[index].most_common()},
                }
                for index in range(len(steps))
            }
    return results


def main(argv: Sequence[str] | None = None) -> int:
    command = parser(__doc__)
    command.add_argument("--releases", type=int, nargs="+", help=f"default {FULL.releases}")
    command.add_argument("--resync", help=f"the operator's safety-net resync (default {FULL.resync})")
    command.add_argument(
        "--samples", type=int, help=f"changes and due steps measured (default {FULL.samples})"
    )
    options = command.parse_args(argv)
    size = SMOKE if options.smoke else FULL
    releases = options.releases or size.releases
    runs = []
    for count in releases:
        workdir = Path(tempfile.mkdtemp(prefix=f"shepherd-scale-{count}-"))
        try:
            runs.append(bench(count, options.resync or size.resync, options.samples or size.samples, workdir))
            print(json.dumps(runs[-1], indent=2), flush=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        growth = (last["rss_mib"] - first["rss_mib"]) / (last["releases"] - first["releases"]) * 1000
        print(json.dumps({"rss_mib_per_1000_releases": growth}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
