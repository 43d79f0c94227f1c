"""Stories: a Release rolled out by the operator through a real gateway, on the real control plane.

Traefik (`make gateway-binaries`) serves the HTTPRoute whose weights Shepherd sets, and writes the route's
status itself: no stand-in gateway controller runs. Real requests go through Traefik during the whole
rollout, answered by the stand-in kube-proxy as the ready pods of each version. At every `setWeight`
step the split of 1000 requests between the versions must match the step's weight within binomial
error, and Traefik's own `traefik_service_requests_total` must have counted exactly those requests. The
Release's analysis reads the canary Service's 5xx ratio from those same Traefik metrics, scraped every
second by the real Prometheus: a healthy canary is promoted, one failing half its requests is rolled
back, after which every request goes to the stable again and the route is as its owner wrote it.

Each measured split is printed (`pytest -s`) and, once the module ends, a JSON summary of them all, as
a bench prints its figures, also written to the session's temporary folder. Without the Traefik binary
the stories fail in CI and are skipped elsewhere, saying why.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from shepherd.lab.gateway import ServiceProxy, Split, Traefik, within_binomial
from shepherd.lab.gateway_demo import (
    CANARY,
    HOST,
    STABLE,
    admin_service,
    paused_at,
    ready_to_count,
    routed_release,
    user_route,
)
from shepherd.lab.promserver import PrometheusServer
from story import DEFAULT_TIMEOUT, Story

GROUP, VERSION, ROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
REQUESTS = 1000
# The 5xx share of the requests Traefik sent to the component's Service of the measured role (the canary
# during the canary's analysis) over the last 10 s: ten scrapes, so that a scrape or two lost on a busy
# machine, or a series Traefik deleted on a reload and counts again from zero, still leaves a rate. No 5xx
# series at all is a ratio of 0; no request at all is no sample, which the analysis counts as
# inconclusive, never as healthy.
SERVICE = 'service=~"{{namespace}}-{{release}}-{{component}}-{{role}}-.*"'
ERROR_RATIO = (
    f'(sum(rate(traefik_service_requests_total{{{SERVICE},code=~"5.."}}[10s])) or vector(0))'
    f" / sum(rate(traefik_service_requests_total{{{SERVICE}}}[10s]))"
)
MAX_ERROR_RATIO = 0.05


@pytest.fixture(scope="module")
def prometheus_of_traefik(traefik: Traefik) -> Iterator[PrometheusServer]:
    """The real Prometheus, scraping Traefik's metrics every second."""
    target = traefik.metrics_url.removeprefix("http://").removesuffix("/metrics")
    with PrometheusServer([target]) as server:
        yield server


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """Every split measured in the module; printed and written as one JSON summary at its end."""
    measured: list[dict[str, Any]] = []
    yield measured
    if measured:
        summary = {
            "bench": "real requests through Traefik, per step of a Shepherd canary",
            "splits": measured,
        }
        path = tmp_path_factory.getbasetemp() / "gateway-splits.json"
        path.write_text(json.dumps(summary, indent=2))
        print(f"\n{json.dumps(summary, indent=2)}\n(written to {path})")


def analysed_by(prometheus: PrometheusServer) -> dict[str, Any]:
    metric = {"name": "error-ratio", "query": ERROR_RATIO, "max": MAX_ERROR_RATIO, "count": 3}
    return {"prometheus": {"address": prometheus.url, "timeout": "2s"}, "interval": "1s", "metrics": [metric]}


@dataclass
class Rollout:
    """Release `shop` of one story, routed through Traefik: what it applies, waits for and measures; each
    measured split is kept in `splits` under the story's `label`."""

    label: str
    story: Story
    traefik: Traefik
    proxy: ServiceProxy
    prometheus: PrometheusServer
    splits: list[dict[str, Any]]

    @property
    def namespace(self) -> str:
        return self.story.namespace

    def route(self) -> dict[str, Any]:
        return dict(
            self.story.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, ROUTES, "shop")
        )

    def first_revision(self) -> dict[str, Any]:
        """The user's route and Release 1.0.0 (no canary: all on stable), served by Traefik; returns the
        route as the server holds it then."""
        self.story.core.create_namespaced_service(self.namespace, admin_service())
        self.story.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, ROUTES, user_route(self.traefik.parent_ref())
        )
        self.apply("1.0.0", [{"setWeight": 100}])
        self.story.wait_phase("Succeeded", revision=1)
        route = self.route()
        self.measure_at_rest("revision 1", "1.0.0")
        return route

    def apply(self, version: str, steps: list[dict[str, Any]]) -> None:
        self.story.apply(routed_release(version, steps, analysed_by(self.prometheus)))

    def wait_sending(
        self, what: str, predicate: Callable[[Mapping[str, Any]], bool], timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Wait for the Release's status while requests go through Traefik all along, as users' would:
        what the analysis measures."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.story.status()
            if predicate(status):
                return status
            assert time.monotonic() < deadline, (
                f"timed out after {timeout}s waiting for {what}; last: {status}"
            )
            self.traefik.send(HOST, 25)

    def measure_step(self, canary_weight: int) -> Split:
        """REQUESTS requests through Traefik at a step of the canary 2.0.0 over the stable 1.0.0: the
        canary's share is the weight's within binomial error, and Traefik counted each request to the
        Service that answered it."""
        ready_to_count(self.traefik, self.namespace, canary_weight, {"1.0.0", "2.0.0"})
        split = self.traefik.split(HOST, self.namespace, REQUESTS)
        self.record(f"setWeight {canary_weight}", canary_weight, split)
        stable, canary = split.answered_by("1.0.0"), split.answered_by("2.0.0")
        assert stable + canary == REQUESTS, split.answers
        assert within_binomial(canary, REQUESTS, canary_weight / 100), split.answers
        assert (split.counted_for(STABLE), split.counted_for(CANARY)) == (stable, canary), split.counted
        return split

    def measure_at_rest(self, step: str, version: str) -> None:
        """REQUESTS requests through Traefik with the route at rest: the stable, at `version`, answers all."""
        ready_to_count(self.traefik, self.namespace, 0, {version})
        split = self.traefik.split(HOST, self.namespace, REQUESTS)
        self.record(step, 0, split)
        assert split.answers == {(200, version): REQUESTS}
        assert split.counted == {(STABLE, "200"): REQUESTS}

    def record(self, step: str, canary_weight: int, split: Split) -> None:
        """Keep and print where the requests went: by the version that answered, and by Traefik's count."""
        versions = sorted({version for _, version in split.answers})
        entry = {
            "story": self.label,
            "step": step,
            "canaryWeight": canary_weight,
            "requests": split.requests,
            "answeredBy": {version: split.answered_by(version) for version in versions},
            "errorsBy": {
                version: sum(n for (code, v), n in split.answers.items() if v == version and code >= 500)
                for version in versions
            },
            "traefikCounted": {STABLE: split.counted_for(STABLE), CANARY: split.counted_for(CANARY)},
            "canaryShare": split.counted_for(CANARY) / split.requests,
        }
        self.splits.append(entry)
        print(
            f"\n{self.label}, {step} (route {100 - canary_weight}/{canary_weight}): {split.requests} "
            f"requests, answered by {entry['answeredBy']}, 5xx {entry['errorsBy']}; Traefik counted "
            f"{entry['traefikCounted']}: canary share {entry['canaryShare']:.1%}"
        )

    def assert_back_as_written(self, original: Mapping[str, Any]) -> None:
        """The route exactly as its owner wrote it, and no canary left running."""
        after = self.route()
        assert after["spec"] == original["spec"], "the route is exactly as its owner wrote it"
        assert after["metadata"]["labels"] == original["metadata"]["labels"]
        assert "shop-api-canary" not in self.story.replicas()


@pytest.fixture
def rollout(
    story: Story,
    traefik: Traefik,
    proxy: ServiceProxy,
    prometheus_of_traefik: PrometheusServer,
    splits: list[dict[str, Any]],
) -> Callable[[str], Rollout]:
    """The story's Rollout, labelled in the summary as the story says."""
    return lambda label: Rollout(label, story, traefik, proxy, prometheus_of_traefik, splits)


def canary_measurements(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [m for m in status.get("analysis") or [] if m.get("role") == "canary"]


def test_a_healthy_canary_splits_real_requests_by_each_weight_and_is_promoted_on_traefik_metrics(
    rollout: Callable[[str], Rollout],
) -> None:
    shop = rollout("healthy")
    original = shop.first_revision()
    steps: list[dict[str, Any]] = []
    for weight in (20, 50, 80):
        steps += [{"setWeight": weight}, {"pause": {}}, {"analysis": {}}]
    shop.apply("2.0.0", steps[:-1])

    for index, weight in enumerate((20, 50, 80)):
        status = shop.wait_sending(f"the pause after setWeight {weight}", paused_at(3 * index + 1))
        assert status["traffic"]["appliedWeight"] == weight and status["traffic"]["verified"] is True
        split = shop.measure_step(weight)
        assert set(split.answers) == {(200, "1.0.0"), (200, "2.0.0")}, split.answers
        shop.story.kubectl("release", "promote", "shop")

    status = shop.wait_sending(
        "Succeeded", lambda s: s.get("phase") == "Succeeded" and s.get("revision") == 2
    )
    measured = canary_measurements(status)
    print(f"\nhealthy canary, analysis of Traefik's metrics: {[(m['value'], m['result']) for m in measured]}")
    assert len(measured) >= 6, "two analysis steps of three measurements each"
    assert {m["result"] for m in measured} == {"Successful"}
    assert all(m["value"] <= MAX_ERROR_RATIO for m in measured), "a number for every measurement: never NaN"
    assert f'service=~"{shop.namespace}-shop-api-canary-.*"' in measured[0]["query"]

    shop.measure_at_rest("promoted", "2.0.0")
    shop.assert_back_as_written(original)


def test_a_canary_failing_half_its_requests_is_rolled_back_by_analysis_of_traefik_metrics(
    rollout: Callable[[str], Rollout],
) -> None:
    shop = rollout("failing")
    original = shop.first_revision()
    shop.proxy.set_error_rate("2.0.0", 0.5)
    shop.apply(
        "2.0.0", [{"setWeight": 20}, {"pause": {}}, {"analysis": {}}, {"setWeight": 50}, {"pause": {}}]
    )

    shop.wait_sending("the pause after setWeight 20", paused_at(1))
    split = shop.measure_step(20)
    assert split.answers[(500, "1.0.0")] == 0
    assert within_binomial(split.answers[(500, "2.0.0")], split.answered_by("2.0.0"), 0.5), split.answers
    assert split.counted[(CANARY, "500")] == split.answers[(500, "2.0.0")]
    shop.story.kubectl("release", "promote", "shop")

    status = shop.wait_sending(
        "RolledBack", lambda s: s.get("phase") == "RolledBack" and s.get("revision") == 2
    )
    assert status["reason"] == "AnalysisFailed"
    failed = [m for m in canary_measurements(status) if m["result"] == "Failed"]
    print(f"\nfailing canary, analysis of Traefik's metrics: {[(m['value'], m['result']) for m in failed]}")
    assert failed and failed[-1]["value"] > 0.2, failed
    assert f"above max {MAX_ERROR_RATIO:g}" in failed[-1]["message"]

    # Every request goes to the stable again, and the route holds nothing of the canary.
    shop.measure_at_rest("rolled back", "1.0.0")
    shop.assert_back_as_written(original)
