"""Fixtures that run the real operator against the local API (loaded by conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster import Cluster

from shepherd.kube import KubeAPI, load_configuration
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread
from shepherd.runner import OperatorOptions, OperatorThread

# Far longer than any test: every step must be driven by watch events and due times, not by resync.
RESYNC_SECONDS = 300.0


@pytest.fixture
def shepherd(local_api: LocalAPIThread) -> Iterator[OperatorThread]:
    """The real operator (Kopf and all), in-process, watching every namespace of the local API."""
    configuration = load_configuration(str(local_api.kubeconfig_path))
    options = OperatorOptions(standalone=True, resync_seconds=RESYNC_SECONDS)
    with OperatorThread(configuration, options) as operator:
        yield operator


@pytest.fixture
def cluster(
    local_api: LocalAPIThread, kubectl: object, kubelet: KubeletSimulator, shepherd: OperatorThread
) -> Iterator[Cluster]:
    api = KubeAPI(load_configuration(str(local_api.kubeconfig_path)))
    yield Cluster(kubectl, api)  # type: ignore[arg-type]
    api.close()
