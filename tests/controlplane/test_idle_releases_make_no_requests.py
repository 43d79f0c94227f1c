"""Story: Releases at rest cost the API server nothing but the operator's open watches.

The operator reads from watch-fed caches, so its resync re-decides from memory: over several resyncs of
Releases that have nothing left to do, kube-apiserver's own audit log shows no request from the operator
other than its watches and its leader Lease. And a rollout writes only what changes.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from shepherd.lab.cluster import InstalledChart, OperatorProcess, install_chart
from shepherd.lab.controlplane import ControlPlane
from shepherd.lab.podsim import PodSimulator
from story import Story, kubectl_runner, quickstart_release

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("SHEPHERD_CLUSTER_BIN", REPO / ".cluster" / "bin"))
CHART = REPO / "charts" / "shepherd"
RESYNC_SECONDS = 2
WATCHED = {
    "releases",
    "deployments",
    "controllerrevisions",
    "jobs",
    "configmaps",
    "releaseapprovals",
    "releasepolicies",
    "namespaces",
    "customresourcedefinitions",
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, InstalledChart]]:
    """A control plane of its own, with an audit log of every request, and the chart at a short resync."""
    workdir = tmp_path_factory.mktemp("audited")
    with ControlPlane(BIN_DIR, workdir, audit=True) as plane, PodSimulator(plane.kubeconfig):
        yield plane, install_chart(plane, CHART, values={"resync": f"{RESYNC_SECONDS}s"})


def reconciles(operator: OperatorProcess) -> float:
    """Reconciles the operator has finished, from its own /metrics."""
    port = next(a.split("=", 1)[1] for a in operator.args if a.startswith("--metrics-port="))
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(r"^shepherd_reconcile_duration_seconds_count ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def received(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()


def requests_by_verb(events: list[dict[str, Any]]) -> Counter[str]:
    """`verb resource` of each request, the leader Lease's renewals left out."""
    return Counter(
        f"{e['verb']} {e['objectRef'].get('resource', '')}"
        for e in events
        if e["stage"] == "ResponseComplete" and e["objectRef"].get("resource") != "leases"
    )


@pytest.fixture
def story(audited: tuple[ControlPlane, InstalledChart], tmp_path: Path) -> Iterator[Story]:
    plane, chart = audited
    admin = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
    namespace = f"idle-{uuid.uuid4().hex[:6]}"
    kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    kubectl = kubectl_runner(plane.kubeconfig, namespace, tmp_path / "kube-cache")
    with OperatorProcess(plane, chart, tmp_path) as operator:
        yield Story(admin, namespace, kubectl, operator)


def test_idle_releases_make_no_request_but_their_watches(
    audited: tuple[ControlPlane, InstalledChart], story: Story
) -> None:
    plane, chart = audited
    operator_user = f"system:serviceaccount:{chart.namespace}:{chart.service_account}"
    story.apply(quickstart_release("1.0.0") | {"metadata": {"name": "plain"}})
    configured = quickstart_release("1.0.0", config=[{"name": "shop-config", "data": {"LOG_LEVEL": "info"}}])
    story.apply(configured | {"metadata": {"name": "configured"}})
    for name in ("plain", "configured"):
        story.wait_phase("Succeeded", name=name)
        story.wait_event("Succeeded", name=name)  # the pass that wrote Succeeded ends with its Event

    # Every Release re-decided by at least three resyncs: what did that cost the API server?
    since = time.time()
    counted = reconciles(story.operator)
    story.wait_until(
        "three resyncs of both Releases",
        lambda: reconciles(story.operator) >= counted + 6 and time.time() > since + 3 * RESYNC_SECONDS,
        timeout=30 * RESYNC_SECONDS,
    )
    until = time.time()
    events = [e for e in plane.audited_requests(operator_user, since) if received(e) < until]
    idle = requests_by_verb(events)

    assert reconciles(story.operator) >= counted + 6
    assert set(idle) <= {f"watch {resource}" for resource in WATCHED}, f"requests at rest: {dict(idle)}"
