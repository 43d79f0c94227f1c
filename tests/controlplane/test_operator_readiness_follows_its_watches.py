"""Story: an informer that keeps failing (its resource forbidden, then allowed again) turns /readyz to 503
with the reason, then recovers by itself.

The operator runs with the chart's arguments, /readyz and /healthz served, and short limits. List and watch
of Jobs are taken from the chart's ClusterRole (the watches open then are cut, as a restart of the API
server would): past --unready-after /readyz answers 503 naming the Jobs' informer and the API server's
refusal, past --unhealthy-after /healthz too (the kubelet would restart the pod, and a standby act). With
the role given back, both answer 200 again without a restart, and a Release rolls out.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import kubernetes
import pytest

from shepherd.lab.cluster import InstalledChart, OperatorProcess
from shepherd.lab.faultproxy import FaultProxy
from story import Story, quickstart_release

UNREADY_AFTER, UNHEALTHY_AFTER = 3, 8
# Retries back off up to 30s: the first one after the role is back comes within that, and lists.
RECOVERY_SECONDS = 60.0
WATCHING = {"ready": True, "message": "watching Releases"}


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return (f"--unready-after={UNREADY_AFTER}s", f"--unhealthy-after={UNHEALTHY_AFTER}s")


def endpoint(process: OperatorProcess, flag: str) -> str:
    return next(a.split("=", 1)[1] for a in process.args if a.startswith(f"{flag}="))


def probe(url: str) -> tuple[int, dict[str, Any]]:
    """The endpoint's status and body; (0, {}) while nothing listens there yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())
    except urllib.error.URLError:
        return 0, {}


def jobs_role(chart: InstalledChart) -> str:
    """The name of the chart's ClusterRole that grants the Jobs."""
    return next(
        str(d["metadata"]["name"])
        for d in chart.manifests
        if d["kind"] == "ClusterRole" and any("jobs" in rule.get("resources", []) for rule in d["rules"])
    )


def test_an_informer_forbidden_turns_readyz_to_503_with_the_reason_then_recovers_by_itself(
    chart: InstalledChart,
    admin: kubernetes.client.ApiClient,
    fault_proxy: FaultProxy,
    proxied_operator: OperatorProcess,
    proxied_story: Story,
) -> None:
    story = proxied_story
    ready, live = endpoint(proxied_operator, "--readiness"), endpoint(proxied_operator, "--liveness")
    story.wait_until("the operator leading and watching", lambda: probe(ready) == (200, WATCHING))
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin)
    name = jobs_role(chart)
    granted = admin.sanitize_for_serialization(rbac.read_cluster_role(name))
    revoked = json.loads(json.dumps(granted))
    for rule in revoked["rules"]:
        if "jobs" in rule.get("resources", []):
            rule["verbs"] = [verb for verb in rule["verbs"] if verb not in ("list", "watch")]
    try:
        rbac.replace_cluster_role(name, revoked)
        fault_proxy.cut_watches()  # an open watch outlives its permission; a new one is refused

        story.wait_until("/readyz to answer 503", lambda: probe(ready)[0] == 503, timeout=30)
        status, body = probe(ready)
        assert status == 503 and body["ready"] is False
        reason = body["message"]
        assert reason.startswith("jobs in all namespaces: no successful list or watch for "), reason
        assert "HTTP 403" in reason and 'cannot watch resource "jobs"' in reason, reason
        assert probe(live)[0] == 200, f"within --unhealthy-after={UNHEALTHY_AFTER}s, alive"
        story.wait_until("/healthz to answer 503", lambda: probe(live)[0] == 503, timeout=30)
        assert "jobs in all namespaces" in probe(live)[1]["message"]
    finally:
        current = rbac.read_cluster_role(name)
        granted["metadata"]["resourceVersion"] = current.metadata.resource_version
        rbac.replace_cluster_role(name, granted)

    story.wait_until("/readyz to answer 200 again", lambda: probe(ready) == (200, WATCHING), RECOVERY_SECONDS)
    assert probe(live) == (200, {"alive": True, "message": "alive"})
    story.apply(quickstart_release("1.0.0"))
    story.wait_phase("Succeeded", revision=1)
    assert proxied_operator.popen is not None and proxied_operator.popen.poll() is None, "never restarted"
