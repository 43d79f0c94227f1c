"""Stories: the real operator, against the local API, whose writes fail now and then (issue 11).

The operator's writes all go through `KubeAPI`; here a subclass answers some of them HTTP 500 (or 422
for a template the Deployment API would refuse) before they reach the API server, and logs the Deployment
writes that went through, in order, so a test can tell whether any of them moved the rollout backwards.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from cluster import Cluster, quickstart_release
from kubernetes.client.exceptions import ApiException

from shepherd.core.actions import Action, ApplyDeployment
from shepherd.handlers import Runtime
from shepherd.kube import KubeAPI, ReleaseKey, Written, load_configuration
from shepherd.lab.localapi import LocalAPIThread
from shepherd.runner import OperatorOptions, OperatorThread

HOLD = {
    "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]}}
}


class FaultyKubeAPI(KubeAPI):
    """`fails(what)` decides whether a write fails with HTTP 500 ("status", "RemoveAnnotations",
    "ApplyDeployment shop-api", ...); `refuses(action)` returns a 422 body for a write to refuse."""

    fails: Callable[[str], bool] = staticmethod(lambda _what: False)  # type: ignore[assignment]
    refuses: Callable[[Action], dict[str, Any] | None] = staticmethod(lambda _action: None)  # type: ignore[assignment]

    def setup(self) -> None:
        self.lock = threading.Lock()
        self.deployment_writes: list[tuple[str, int, int, str]] = []  # name, replicas, revision, image
        self.attempts: list[tuple[float, str]] = []  # every write tried: when, what

    def apply(self, key: ReleaseKey, action: Action, live: Mapping[str, Mapping[str, Any]]) -> list[Written]:
        what = type(action).__name__ + (f" {action.name}" if isinstance(action, ApplyDeployment) else "")
        self._attempt(what)
        written = super().apply(key, action, live)
        if isinstance(action, ApplyDeployment):
            spec = action.manifest["spec"]
            labels = spec["template"]["metadata"]["labels"]
            image = spec["template"]["spec"]["containers"][0]["image"]
            with self.lock:
                self.deployment_writes.append(
                    (action.name, spec["replicas"], int(labels["shepherd.dev/revision"]), image)
                )
        return written

    def _apply(
        self, key: ReleaseKey, action: Action, live: Mapping[str, Mapping[str, Any]]
    ) -> Written | None:
        refusal = self.refuses(action)
        if refusal is not None:  # as the API server answers, under the adapter's own classification
            raise _error(422, refusal)
        return super()._apply(key, action, live)

    def patch_status(self, key: ReleaseKey, status: Mapping[str, Any], resource_version: str = "") -> Written:
        self._attempt("status")
        return super().patch_status(key, status, resource_version)

    def _attempt(self, what: str) -> None:
        with self.lock:
            self.attempts.append((time.monotonic(), what))
        if self.fails(what):
            raise _error(
                500, {"kind": "Status", "code": 500, "message": "injected: etcdserver: leader changed"}
            )


def _error(code: int, body: Mapping[str, Any]) -> ApiException:
    error = ApiException(status=code, reason="Injected")
    error.body = json.dumps(body)
    return error


@pytest.fixture
def faulty(local_api: LocalAPIThread) -> Iterator[FaultyKubeAPI]:
    api = FaultyKubeAPI(load_configuration(str(local_api.kubeconfig_path)))
    api.setup()
    yield api


@pytest.fixture
def shepherd(faulty: FaultyKubeAPI) -> Iterator[OperatorThread]:
    """The real operator with the faulty adapter (overrides operator_fixtures' own)."""
    runtime = Runtime(api=faulty, resync_seconds=300.0, first_backoff_seconds=0.2, max_backoff_seconds=1.0)
    options = OperatorOptions(standalone=True, resync_seconds=300.0)
    with OperatorThread(faulty.configuration, options, runtime=runtime) as operator:
        yield operator


def never_backwards(writes: list[tuple[str, int, int, str]]) -> None:
    """Within a revision a canary never shrinks; stable never goes back to an older revision."""
    canary: dict[tuple[str, int], int] = {}
    stable: dict[str, int] = {}
    for name, replicas, revision, image in writes:
        if name.endswith("-canary"):
            assert replicas >= canary.get((name, revision), 0), (name, revision, replicas, writes)
            canary[(name, revision)] = replicas
        else:
            assert revision >= stable.get(name, 0), (name, revision, image, writes)
            stable[name] = revision


def promote(cluster: Cluster, value: str) -> None:
    cluster.kubectl("annotate", "--overwrite", "release", "shop", f"shepherd.dev/promote={value}")


def test_a_fifth_of_the_writes_failing_never_moves_the_rollout_backwards(
    cluster: Cluster, faulty: FaultyKubeAPI
) -> None:
    cluster.apply(quickstart_release("1.0.0", **HOLD))
    cluster.wait_phase("Succeeded", revision=1)
    faults = random.Random(11)
    faulty.fails = lambda what: faults.random() < 0.2
    cluster.apply(quickstart_release("1.1.0", **HOLD))
    cluster.wait_status("the canary at 25%", lambda s: s.get("phase") == "Paused" and s["canaryWeight"] == 25)
    promote(cluster, "first")
    cluster.wait_status("the canary at 75%", lambda s: s.get("phase") == "Paused" and s["canaryWeight"] == 75)
    promote(cluster, "second")
    status = cluster.wait_phase("Succeeded", revision=2)

    never_backwards(faulty.deployment_writes)
    assert sum(1 for _, what in faulty.attempts if what == "status") > 5
    promotes = [(c["value"], c["outcome"]) for c in status["history"][-1]["commands"]]
    assert promotes == [("first", "step 2 skipped"), ("second", "step 4 skipped")], "each acted on once"
    assert set(cluster.images().values()) == {
        "ghcr.io/example/shop-api:1.1.0",
        "ghcr.io/example/shop-web:1.1.0",
    }


def test_an_abort_whose_status_write_fails_still_rolls_back_once(
    cluster: Cluster, faulty: FaultyKubeAPI
) -> None:
    cluster.apply(quickstart_release("1.0.0", **HOLD))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", **HOLD))
    cluster.wait_status("the canary at 25%", lambda s: s.get("phase") == "Paused" and s["canaryWeight"] == 25)
    failed: list[str] = []

    def first_status_write_and_first_removal(what: str) -> bool:
        if what in ("status", "RemoveAnnotations") and what not in failed:
            failed.append(what)
            return True
        return False

    faulty.fails = first_status_write_and_first_removal
    cluster.kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
    status = cluster.wait_phase("RolledBack")
    assert failed == ["status", "RemoveAnnotations"]
    assert status["reason"] == "Aborted"
    aborts = [c for c in status["history"][-1]["commands"] if c["action"] == "abort"]
    assert len(aborts) == 1
    cluster.wait_status("the abort annotation removed", lambda s: not s["commands"][-1]["open"])
    assert "shepherd.dev/abort" not in cluster.release()["metadata"].get("annotations", {})
    assert [e["reason"] for e in cluster.events()].count("Abort") == 1
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}


def env_as_a_string(action: Action) -> dict[str, Any] | None:
    """What kube-apiserver answers a Deployment whose container env is a string (the local API admits it)."""
    if not isinstance(action, ApplyDeployment):
        return None
    container = action.manifest["spec"]["template"]["spec"]["containers"][0]
    if not isinstance(container.get("env", []), str):
        return None
    field = "spec.template.spec.containers[0].env"
    return {
        "kind": "Status",
        "code": 422,
        "reason": "Invalid",
        "message": f'Deployment.apps "{action.name}" is invalid: {field}: Invalid value: "string": '
        "must be a list",
        "details": {"causes": [{"reason": "FieldValueInvalid", "field": field, "message": "must be a list"}]},
    }


def test_a_template_the_api_server_refuses_stalls_the_release_and_is_not_sent_again(
    cluster: Cluster, faulty: FaultyKubeAPI, shepherd: OperatorThread
) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    faulty.refuses = env_as_a_string
    bad = quickstart_release("1.1.0")
    bad["spec"]["components"][0]["template"]["spec"]["containers"][0]["env"] = "LOG_LEVEL=debug"
    cluster.apply(bad)
    cluster.kubectl("wait", "--for=condition=Stalled", "release/shop", "--timeout=45s")
    stalled = next(c for c in cluster.status()["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "InvalidTemplate"
    assert "spec.template.spec.containers[0].env" in stalled["message"]
    assert "shop-api-canary" in stalled["message"]
    cluster.wait_event("InvalidTemplate")
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}, "what runs is untouched"

    def refused() -> int:
        return sum(1 for _, what in faulty.attempts if what == "ApplyDeployment shop-api-canary")

    tried = refused()
    cluster.reconciled_after(
        shepherd, lambda: cluster.kubectl("annotate", "release", "shop", "unrelated=touch")
    )
    cluster.reconciled_after(
        shepherd, lambda: cluster.kubectl("annotate", "release", "shop", "unrelated=again", "--overwrite")
    )
    assert refused() == tried, "the same content is not sent again"

    cluster.apply(quickstart_release("1.2.0"))  # a new generation, fixed: tried again
    status = cluster.wait_status(
        "the fixed canary", lambda s: s.get("revision") == 3 and s["canaryWeight"] > 0
    )
    assert not any(c["type"] == "Stalled" for c in status["conditions"])
    assert "rejected" not in status


def test_a_failing_api_backs_off_and_deployment_events_do_not_cut_the_backoff_short(
    cluster: Cluster, faulty: FaultyKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    with faulty.lock:
        faulty.attempts.clear()
    faulty.fails = lambda what: what.startswith("ApplyDeployment")
    with caplog.at_level(logging.WARNING, logger="shepherd.handlers"):
        cluster.apply(quickstart_release("1.1.0"))
        deadline = time.monotonic() + 30
        while sum(1 for _, what in faulty.attempts if what.startswith("ApplyDeployment")) < 4:
            assert time.monotonic() < deadline, faulty.attempts
            # Deployment watch events while backing off: they must not wake the loop.
            cluster.kubectl("annotate", "deployment", "shop-api", f"touch={time.monotonic()}", "--overwrite")
            time.sleep(0.05)  # pacing the touches, not synchronisation
    tries = [at for at, what in faulty.attempts if what.startswith("ApplyDeployment")][:4]
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert all(gap >= 0.19 for gap in gaps), gaps  # first backoff 0.2 s, then 0.4 s, 0.8 s (plus jitter)
    assert gaps[2] >= 0.79, gaps
    failures = [r.getMessage() for r in caplog.records if "reconcile failed" in r.getMessage()]
    assert failures and all(m.startswith("default/shop: ") for m in failures), failures
    faulty.fails = lambda _what: False
    cluster.wait_status("the canary", lambda s: s.get("revision") == 2 and s["canaryWeight"] > 0)
