"""Story: an operator asked to stop ends its own passes and watches as Kopf stops, so Kopf finds none of
them still running ("hung tasks", which it would wait 5 s for before cancelling them)."""

from __future__ import annotations

import logging

import pytest
from cluster import Cluster, quickstart_release

from shepherd.runner import OperatorThread

HUNG = "Hung tasks"


def test_stopping_leaves_kopf_no_hung_task_of_the_operator(
    cluster: Cluster, shepherd: OperatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)

    with caplog.at_level(logging.DEBUG, logger="kopf"):
        shepherd.stop()

    hung = [record.getMessage() for record in caplog.records if record.getMessage().startswith(HUNG)]
    assert hung == ["Hung tasks stopping is skipped: no tasks given."], hung
    assert shepherd.error is None
