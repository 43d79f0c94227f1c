"""Story: an SRE scrapes the operator's /metrics during releases and reads DORA metrics off it."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cluster import Cluster, quickstart_release
from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_until
from shepherd.kube import KubeAPI, load_configuration
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread
from shepherd.runner import OperatorOptions, OperatorThread

HOLD = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def metered(
    local_api: LocalAPIThread, kubectl: object, kubelet: KubeletSimulator
) -> Iterator[tuple[Cluster, int]]:
    port = free_port()
    configuration = load_configuration(str(local_api.kubeconfig_path))
    options = OperatorOptions(standalone=True, resync_seconds=300, metrics_port=port)
    api = KubeAPI(configuration)
    with OperatorThread(configuration, options):
        yield Cluster(kubectl, api), port  # type: ignore[arg-type]
    api.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted({"namespace": "default", "release": "shop", **labels}.items())))
    return float(samples[key])


def scraped_once_rolled_back(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    samples = scrape(port)
    key = ("shepherd_release_phase", (("namespace", "default"), ("phase", "RolledBack"), ("release", "shop")))
    return samples if samples.get(key) == 1 else None


def test_dora_metrics_across_a_release_and_a_rollback(metered: tuple[Cluster, int]) -> None:
    cluster, port = metered
    first = quickstart_release("1.0.0")
    committed = datetime.now(UTC) - timedelta(minutes=30)
    first["metadata"]["annotations"] = {
        "shepherd.dev/committed-at": committed.isoformat().replace("+00:00", "Z")
    }
    cluster.apply(first)
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", **HOLD))
    cluster.wait_phase("Paused", revision=2)
    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    cluster.wait_phase("RolledBack")

    # The pass that writes RolledBack records its metrics, all at once, just after the status.
    samples = wait_until(lambda: scraped_once_rolled_back(port), message="the RolledBack metrics")
    assert value(samples, "shepherd_revisions_total") == 2
    assert value(samples, "shepherd_deployments_total") == 1
    assert value(samples, "shepherd_rollbacks_total", reason="Aborted") == 1
    assert value(samples, "shepherd_change_failure_ratio") == 0.5
    assert value(samples, "shepherd_lead_time_seconds_count") == 1
    assert value(samples, "shepherd_lead_time_seconds_sum") >= 30 * 60
    assert value(samples, "shepherd_time_to_restore_seconds_count") == 1
    assert value(samples, "shepherd_release_phase", phase="RolledBack") == 1
    assert value(samples, "shepherd_release_phase", phase="Succeeded") == 0
    assert value(samples, "shepherd_phase_transitions_total", phase="Paused") == 1
    assert value(samples, "shepherd_rollout_duration_seconds_count", result="RolledBack") == 1
    assert samples[("shepherd_reconcile_duration_seconds_count", ())] > 0
