"""Story: a team's webhook hears about every transition of its releases, once, and a webhook that is down
or flaky never holds a rollout nor shows its URL anywhere."""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cluster import Cluster, quickstart_release

from helpers import wait_until
from receiver import Receiver, secret
from shepherd.handlers import Runtime
from shepherd.kube import KubeAPI, ReleaseKey, load_configuration
from shepherd.lab.kubelet import KubeletSimulator
from shepherd.lab.localapi import LocalAPIThread
from shepherd.notifier import DeliveryPolicy
from shepherd.runner import OperatorOptions, OperatorThread

# Retries a test can wait for: 3 attempts, 0.05s then 0.1s apart (plus jitter).
QUICK_RETRIES = DeliveryPolicy(
    attempts=3, first_backoff=0.05, max_backoff=0.2, attempt_timeout=2, deadline=10
)


def refused_url() -> str:
    """A URL on a port nothing listens on: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/T0{secrets.token_hex(8)}"


def notified(name: str, *events: str, format: str = "json") -> dict[str, Any]:
    return {
        "webhook": {"urlSecretRef": {"name": name, "key": "url"}, "format": format},
        "events": list(events),
    }


EVERY_PHASE = ["Pending", "Gating", "Progressing", "Paused", "Promoting", "Baking", "Succeeded"]
EVERY_PHASE += ["RollingBack", "RolledBack", "Failed"]


@dataclass
class Operated:
    cluster: Cluster
    operator: OperatorThread

    @property
    def runtime(self) -> Runtime:
        assert self.operator.runtime is not None
        return self.operator.runtime


def operated(local_api: LocalAPIThread, kubectl: object, delivery: DeliveryPolicy) -> Iterator[Operated]:
    configuration = load_configuration(str(local_api.kubeconfig_path))
    api = KubeAPI(configuration)
    runtime = Runtime(api=KubeAPI(configuration), resync_seconds=300, delivery=delivery)
    options = OperatorOptions(standalone=True, resync_seconds=300)
    with OperatorThread(configuration, options, runtime=runtime) as operator:
        yield Operated(Cluster(kubectl, api), operator)  # type: ignore[arg-type]
    api.close()


def sent(operated: Operated, result: str) -> float | None:
    """shepherd_notifications_total of the Release shop, as /metrics shows it."""
    labels = {"namespace": "default", "release": "shop", "result": result}
    return operated.runtime.metrics.registry.get_sample_value("shepherd_notifications_total", labels)


@pytest.fixture
def quick(local_api: LocalAPIThread, kubectl: object, kubelet: KubeletSimulator) -> Iterator[Operated]:
    """The operator with retries a test can wait for."""
    yield from operated(local_api, kubectl, QUICK_RETRIES)


@pytest.fixture
def patient(local_api: LocalAPIThread, kubectl: object, kubelet: KubeletSimulator) -> Iterator[Operated]:
    """The operator with the real retry schedule (a message is retried for seconds), stopping without
    waiting for them."""
    yield from operated(local_api, kubectl, DeliveryPolicy(stop_grace=0))


def test_a_webhook_hears_each_transition_of_a_rollout_once_across_a_restart(
    cluster: Cluster, shepherd: OperatorThread, receiver: Receiver
) -> None:
    cluster.kubectl("apply", "-f", "-", input=secret("shop-hook", receiver.url))
    cluster.apply(quickstart_release("1.0.0", notifications=[notified("shop-hook", *EVERY_PHASE)]))
    cluster.wait_phase("Succeeded", revision=1)
    hold = {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}}
    cluster.apply(quickstart_release("1.1.0", notifications=[notified("shop-hook", *EVERY_PHASE)], **hold))
    cluster.wait_phase("Paused", revision=2)
    wait_until(lambda: receiver.phases()[-1:] == [(2, "Paused")], message="the Paused message")
    shepherd.stop()

    with OperatorThread(shepherd.configuration, shepherd.options) as restarted:

        def poke(value: str) -> None:
            """Make the operator reconcile once more, with nothing to change."""
            change = ("annotate", "release", "shop", f"poke={value}", "--overwrite")
            cluster.reconciled_after(restarted, lambda: cluster.kubectl(*change))

        poke("restarted")  # the Paused status it did not write is no transition: nothing to send
        cluster.kubectl("annotate", "release", "shop", "shepherd.dev/promote=true")
        cluster.wait_phase("Succeeded", revision=2)
        wait_until(lambda: receiver.phases()[-1:] == [(2, "Succeeded")], message="the last message")
        for again in range(3):
            poke(str(again))

    assert receiver.phases() == [
        (1, "Progressing"),
        (1, "Baking"),
        (1, "Succeeded"),
        (2, "Progressing"),
        (2, "Paused"),
        (2, "Promoting"),
        (2, "Baking"),
        (2, "Succeeded"),
    ]
    assert len(receiver.requests) == 8, "reconciles that change nothing send nothing"
    first = receiver.accepted[0]
    assert (first["release"], first["namespace"], first["version"]) == ("shop", "default", "1.0.0")
    assert first["events"] == ["Progressing", "NewRevision"]
    paused = receiver.accepted[4]
    assert (paused["reason"], paused["previousPhase"]) == ("CanaryPauseStep", "Progressing")
    assert "promote" in paused["message"]


def test_a_webhook_that_is_down_never_holds_the_rollout(patient: Operated) -> None:
    cluster = patient.cluster
    url = refused_url()
    cluster.kubectl("apply", "-f", "-", input=secret("shop-hook", url))
    cluster.apply(quickstart_release("1.0.0", notifications=[notified("shop-hook", *EVERY_PHASE)]))

    status = cluster.wait_phase("Succeeded", revision=1)

    # The first message cannot have given up yet: its backoffs alone add up to 15s.
    assert patient.runtime.notifier.pending > 0, "the rollout went on while the webhook was retried"
    assert url.rsplit("/", 1)[1] not in json.dumps(status)


def test_a_webhook_down_for_good_is_reported_by_its_secret_never_its_url(
    quick: Operated, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cluster = quick.cluster
    url = refused_url()
    token = url.rsplit("/", 1)[1]
    cluster.kubectl("apply", "-f", "-", input=secret("shop-hook", url))
    cluster.apply(quickstart_release("1.0.0", notifications=[notified("shop-hook", "Succeeded")]))
    cluster.wait_phase("Succeeded", revision=1)

    event = wait_until(
        lambda: next((e for e in cluster.events() if e["reason"] == "NotificationFailed"), None),
        message="the NotificationFailed event",
    )

    assert event["type"] == "Warning"
    assert event["message"] == (
        "Succeeded of revision 1 (1.0.0) to Secret default/shop-hook key url: "
        "cannot connect: Connection refused"
    )
    failures = [
        r.getMessage() for r in caplog.records if r.name == "shepherd.notifier" and r.levelname == "WARNING"
    ]
    assert failures == [
        "notification Succeeded of revision 1 (1.0.0) of default/shop to Secret default/shop-hook "
        "key url (spec.notifications[0]) failed: cannot connect: Connection refused"
    ]
    retries = [r for r in caplog.records if r.name == "shepherd.notifier" and "next in" in r.getMessage()]
    assert len(retries) == QUICK_RETRIES.attempts - 1
    assert sent(quick, "failed") == 1
    assert token not in caplog.text
    assert token not in json.dumps(cluster.status()) + json.dumps(cluster.events())


def test_a_flaky_webhook_gets_the_message_once_after_retries(quick: Operated, receiver: Receiver) -> None:
    cluster = quick.cluster
    receiver.answers = [500, 500]
    cluster.kubectl("apply", "-f", "-", input=secret("shop-hook", receiver.url))
    cluster.apply(
        quickstart_release("1.0.0", notifications=[notified("shop-hook", "Succeeded", format="slack")])
    )
    cluster.wait_phase("Succeeded", revision=1)

    wait_until(lambda: receiver.accepted, message="the message, after two 500s")
    wait_until(lambda: quick.runtime.notifier.pending == 0, message="the delivery to end")

    assert len(receiver.requests) == 3
    assert receiver.requests[0] == receiver.requests[1] == receiver.accepted[0]
    (message,) = receiver.accepted
    assert message["text"].startswith(":white_check_mark: *default/shop* 1.0.0 (revision 1): *Succeeded*")
    assert (sent(quick, "delivered"), sent(quick, "failed")) == (1, None), "no failure was ever counted"


def test_a_policy_webhook_hears_about_the_releases_it_selects(
    cluster: Cluster, shepherd: OperatorThread, receiver: Receiver
) -> None:
    for namespace in ("ops", "staging"):
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    cluster.kubectl("label", "namespace", "default", "environment=production")
    cluster.kubectl("apply", "-f", "-", input=secret("sre-hook", receiver.url, namespace="ops"))
    policy = {
        "apiVersion": "shepherd.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "prod-rules"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"environment": "production"}},
            "notifications": [
                {
                    "webhook": {"urlSecretRef": {"name": "sre-hook", "namespace": "ops", "key": "url"}},
                    "events": ["Succeeded"],
                }
            ],
        },
    }
    cluster.apply(policy)
    cluster.apply(quickstart_release("1.0.0"))
    staging = quickstart_release("1.0.0")
    staging["metadata"]["namespace"] = "staging"
    cluster.apply(staging)
    cluster.wait_phase("Succeeded", revision=1)
    wait_until(
        lambda: (
            (cluster.api.get_release(ReleaseKey("staging", "shop")) or {}).get("status", {}).get("phase")
            == "Succeeded"
        ),
        timeout=45,
        message="the staging Release to succeed",
    )
    assert shepherd.runtime is not None
    wait_until(lambda: shepherd.runtime.notifier.pending == 0, message="every delivery to end")

    assert [(m["namespace"], m["release"], m["phase"]) for m in receiver.accepted] == [
        ("default", "shop", "Succeeded")
    ]
