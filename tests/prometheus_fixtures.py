"""Fixtures of the Prometheus bench: a real Prometheus server scraping a traffic exporter.

One server and one exporter serve the whole session (Prometheus takes about 5 s to start scraping).
Tests use the function-scoped `exporter` and `prometheus`: the first forgets every test's traffic,
the second restarts the server if a test stopped it, so no test inherits another's state.

A conftest loads the fixtures by importing them (the session-scoped ones too: the others need them);
tests import the wait helpers. Prometheus keeps what it scraped for the whole session: give every
test its own series (`series_key`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest

from shepherd.lab.exporter import SeriesKey, TrafficExporter
from shepherd.lab.promserver import PrometheusServer
from shepherd.prometheus import Connection, Prometheus, Sample

__all__ = [
    "exporter",
    "exporter_for_session",
    "prometheus",
    "prometheus_api",
    "prometheus_for_session",
    "series_key",
    "wait_for_sample",
    "wait_for_value",
]

WAIT_SECONDS = 15.0
POLL_SECONDS = 0.1


@pytest.fixture(scope="session")
def exporter_for_session() -> Iterator[TrafficExporter]:
    """Use `exporter`: this one keeps the traffic of earlier tests."""
    with TrafficExporter() as exporter:
        yield exporter


@pytest.fixture
def exporter(exporter_for_session: TrafficExporter) -> Iterator[TrafficExporter]:
    """The exporter Prometheus scrapes, with no traffic but this test's."""
    exporter_for_session.reset()
    yield exporter_for_session
    exporter_for_session.reset()


@pytest.fixture(scope="session")
def prometheus_for_session(exporter_for_session: TrafficExporter) -> Iterator[PrometheusServer]:
    """Use `prometheus`: a test that stopped this one would leave it stopped for the next."""
    with PrometheusServer([exporter_for_session.target]) as server:
        yield server


@pytest.fixture
def prometheus(prometheus_for_session: PrometheusServer) -> Iterator[PrometheusServer]:
    """The running Prometheus server; the test may stop and start it, it runs again afterwards."""
    prometheus_for_session.start()
    yield prometheus_for_session
    prometheus_for_session.start()


@pytest.fixture
def prometheus_api(prometheus: PrometheusServer) -> Prometheus:
    """The adapter, connected to the bench's Prometheus."""
    return Prometheus(Connection(address=prometheus.url, timeout=5.0))


@pytest.fixture
def series_key(request: pytest.FixtureRequest) -> SeriesKey:
    """A canary key whose namespace is this test's own, so no other test's series match its queries."""
    namespace = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return SeriesKey(namespace=namespace, release="shop", component="api", version="2.0.0", role="canary")


def wait_for_sample(
    api: Prometheus, query: str, accept: Callable[[Sample], bool], timeout: float = WAIT_SECONDS
) -> Sample:
    """Query until a sample is accepted; fail the test with the last one at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        sample = api.instant(query)
        if accept(sample):
            return sample
        if time.monotonic() > deadline:
            pytest.fail(f"no acceptable answer within {timeout:g}s to {query!r}; last: {sample}")
        time.sleep(POLL_SECONDS)


def wait_for_value(
    api: Prometheus,
    query: str,
    accept: Callable[[float], bool] = lambda value: True,
    timeout: float = WAIT_SECONDS,
) -> float:
    """Query until it returns a number (that `accept`s, if given) and return that number."""
    sample = wait_for_sample(
        api, query, lambda s: s.outcome == "value" and s.value is not None and accept(s.value), timeout
    )
    assert sample.value is not None
    return sample.value
