"""The Prometheus adapter against the real Prometheus server, and against local HTTP servers where
only a misbehaving server can show a behaviour (timeouts, headers sent, TLS, non-Prometheus errors)."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from prometheus_fixtures import wait_for_sample, wait_for_value
from shepherd.core.promql import render_query
from shepherd.lab import promserver
from shepherd.lab.exporter import SeriesKey, TrafficExporter
from shepherd.lab.promserver import PrometheusFailed, PrometheusNotInstalled, PrometheusServer
from shepherd.prometheus import Connection, Prometheus

PROMETHEUS_VECTOR_OF_42 = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1700000000.0, "42"]}]},
}


def selector(key: SeriesKey, metric: str, **more: str) -> str:
    """A PromQL selector of the key's series, its values escaped by render_query as the operator does."""
    matchers = 'namespace="{{namespace}}",version="{{version}}",role="{{role}}"'
    matchers += "".join(f',{name}="{value}"' for name, value in more.items())
    return render_query(f"{metric}{{{matchers}}}", key.labels())


def mean_latency(key: SeriesKey) -> str:
    return (
        f"sum({selector(key, 'http_request_duration_seconds_sum')})"
        f" / sum({selector(key, 'http_request_duration_seconds_count')})"
    )


# --- instant queries against the real Prometheus ---


def test_one_series_gives_its_value(
    exporter: TrafficExporter, prometheus_api: Prometheus, series_key: SeriesKey
) -> None:
    exporter.set_traffic(series_key, rps=40, error_ratio=0.1)
    errors = f"sum(rate({selector(series_key, 'http_requests_total', code='500')}[5s]))"
    total = f"sum(rate({selector(series_key, 'http_requests_total')}[5s]))"

    # Both counters grow in the same tick and are scraped together: the ratio is exact, not roughly 0.1.
    ratio = wait_for_value(prometheus_api, f"{errors} / {total}")

    assert ratio == pytest.approx(0.1, rel=1e-9)
    sample = prometheus_api.instant(f"{errors} / {total}")
    assert (sample.outcome, sample.message) == ("value", f"{sample.value:g}")
    assert sample.query == f"{errors} / {total}"


def test_a_histogram_quantile_lies_in_the_bucket_of_the_latency(
    exporter: TrafficExporter, prometheus_api: Prometheus, series_key: SeriesKey
) -> None:
    exporter.set_traffic(series_key, rps=20, latency_seconds=0.3)
    buckets = selector(series_key, "http_request_duration_seconds_bucket")

    p99 = wait_for_value(prometheus_api, f"histogram_quantile(0.99, sum by (le) (rate({buckets}[5s])))")

    assert 0.25 < p99 <= 0.5


def test_a_query_matching_nothing_is_empty(prometheus_api: Prometheus, series_key: SeriesKey) -> None:
    sample = prometheus_api.instant(selector(series_key, "http_requests_total"))

    assert (sample.outcome, sample.value, sample.message) == ("empty", None, "query returned no data")


@pytest.mark.parametrize("query", ["0/0", "vector(0) / 0"], ids=["scalar", "vector"])
def test_not_a_number_is_nan(prometheus_api: Prometheus, query: str) -> None:
    sample = prometheus_api.instant(query)

    assert (sample.outcome, sample.value, sample.message) == ("nan", None, "query returned NaN")


def test_a_scalar_counts_as_one_sample(prometheus_api: Prometheus) -> None:
    sample = prometheus_api.instant("scalar(vector(0.25)) * 2")

    assert (sample.outcome, sample.value) == ("value", 0.5)


def test_several_series_name_the_labels_that_differ(
    exporter: TrafficExporter, prometheus_api: Prometheus, series_key: SeriesKey
) -> None:
    stable = replace(series_key, role="stable", version="1.0.0")
    exporter.set_traffic(series_key, rps=10)
    exporter.set_traffic(stable, rps=10)
    every_code = render_query('http_requests_total{namespace="{{namespace}}"}', series_key.labels())
    ok_only = render_query('http_requests_total{namespace="{{namespace}}",code="200"}', series_key.labels())

    two = wait_for_sample(prometheus_api, ok_only, lambda sample: sample.outcome == "multiple")
    four = prometheus_api.instant(every_code)

    assert two.value is None
    assert two.message == (
        "query returned 2 series that differ in {role, version}: "
        '{role="canary", version="2.0.0"}, {role="stable", version="1.0.0"}'
    )
    assert four.outcome == "multiple"
    assert four.message.startswith("query returned 4 series that differ in {code, role, version}: ")


def test_extra_labels_tell_apart_the_pods_of_one_key(
    exporter: TrafficExporter, prometheus_api: Prometheus, series_key: SeriesKey
) -> None:
    for pod in ("shop-api-7d9f-abcde", "shop-api-7d9f-fghij"):
        exporter.set_traffic(replace(series_key, extra_labels=(("pod", pod),)), rps=10)

    sample = wait_for_sample(
        prometheus_api,
        selector(series_key, "http_requests_total", code="200"),
        lambda sample: sample.outcome == "multiple",
    )

    assert sample.message == (
        "query returned 2 series that differ in {pod}: "
        '{pod="shop-api-7d9f-abcde"}, {pod="shop-api-7d9f-fghij"}'
    )
    with pytest.raises(ValueError, match="'le' cannot be an extra label name"):
        replace(series_key, extra_labels=(("le", "1"),))


def test_a_range_vector_is_an_error_for_an_instant_measurement(
    exporter: TrafficExporter, prometheus_api: Prometheus, series_key: SeriesKey
) -> None:
    exporter.set_traffic(series_key, rps=10)
    wait_for_value(prometheus_api, f"sum({selector(series_key, 'http_requests_total')})")

    sample = prometheus_api.instant(f"{selector(series_key, 'http_requests_total', code='200')}[10s]")

    assert (sample.outcome, sample.value) == ("error", None)
    assert "range vector" in sample.message


def test_hostile_label_values_are_matched_exactly(
    exporter: TrafficExporter, prometheus_api: Prometheus, series_key: SeriesKey
) -> None:
    hostile = replace(series_key, version='a"} or vector(1) #\\ and\nnew line\ttab\x01\x85 é')
    # Decoys: what a broken escape would match instead (the text up to the quote, the unescaped text).
    exporter.set_traffic(hostile, rps=10, latency_seconds=0.7)
    exporter.set_traffic(replace(series_key, version="a"), rps=10, latency_seconds=0.2)
    exporter.set_traffic(replace(series_key, version='a"} or vector(1) #'), rps=10, latency_seconds=0.4)

    latency = wait_for_value(prometheus_api, mean_latency(hostile))
    series = prometheus_api.instant(f"count({selector(hostile, 'http_requests_total')})")

    assert latency == pytest.approx(0.7)
    assert (series.outcome, series.value) == ("value", 2.0)  # its 200 and its 500 series, nothing else


# --- syntax checks ---


def test_syntax_error_returns_prometheus_parse_error(prometheus_api: Prometheus) -> None:
    broken = "sum(rate(http_requests_total[1m])"

    assert prometheus_api.syntax_error(broken) == "1:34: parse error: unclosed left parenthesis"
    assert prometheus_api.syntax_error("sum(rate(http_requests_total[1m]))") is None
    sample = prometheus_api.instant(broken)
    assert sample.outcome == "error"
    assert (
        sample.message
        == 'HTTP 400 bad_data: invalid parameter "query": 1:34: parse error: unclosed left parenthesis'
    )


def test_a_query_that_parses_but_fails_to_evaluate_has_no_syntax_error(prometheus_api: Prometheus) -> None:
    bad_regex = 'label_replace(vector(1), "to", "$1", "from", "(")'

    assert prometheus_api.syntax_error(bad_regex) is None
    sample = prometheus_api.instant(bad_regex)
    assert sample.outcome == "error"
    assert sample.message.startswith("HTTP 422 execution: ")


# --- range queries ---


def test_a_range_query_returns_the_values_of_its_one_series(
    exporter: TrafficExporter, prometheus_api: Prometheus, series_key: SeriesKey
) -> None:
    exporter.set_traffic(series_key, rps=10, latency_seconds=0.25)
    requests = f"sum({selector(series_key, 'http_requests_total')})"
    # 40 requests at 10 rps: the last scrape is 4s into the traffic, 3s after the first scrape at the latest.
    wait_for_value(prometheus_api, requests, lambda count: count >= 40)
    end = datetime.now(UTC)
    start = end - timedelta(seconds=2)

    latencies = prometheus_api.range(mean_latency(series_key), start, end, 1.0)
    counts = prometheus_api.range(requests, start, end, 1.0)

    assert latencies.outcome == "values"
    assert latencies.values == pytest.approx([0.25] * 3)  # at start, start + 1s, start + 2s
    assert latencies.message == "3 samples"
    assert counts.outcome == "values"
    assert list(counts.values) == sorted(counts.values)
    assert counts.values[-1] > counts.values[0]


def test_range_outcomes_without_one_series(
    exporter: TrafficExporter, prometheus_api: Prometheus, series_key: SeriesKey
) -> None:
    exporter.set_traffic(series_key, rps=10)
    exporter.set_traffic(replace(series_key, role="stable"), rps=10)
    every_role = render_query(
        'http_requests_total{namespace="{{namespace}}",code="200"}', series_key.labels()
    )
    wait_for_sample(prometheus_api, every_role, lambda sample: sample.outcome == "multiple")
    # The client rounds both ends to whole seconds: a second more keeps the moment just seen in the range.
    end = datetime.now(UTC) + timedelta(seconds=1)
    start = end - timedelta(seconds=5)

    several = prometheus_api.range(every_role, start, end, 1.0)
    nothing = prometheus_api.range(selector(series_key, "no_such_metric"), start, end, 1.0)
    only_nan = prometheus_api.range("0/0", start, end, 1.0)

    assert (several.outcome, several.values) == ("multiple", ())
    assert "differ in {role}" in several.message
    assert (nothing.outcome, nothing.message) == ("empty", "query returned no data")
    assert (only_nan.outcome, only_nan.values, only_nan.message) == (
        "empty",
        (),
        "query returned only NaN samples",
    )


# --- Prometheus down and back ---


def test_a_stopped_prometheus_is_an_error_and_a_restart_keeps_its_data(
    exporter: TrafficExporter, prometheus: PrometheusServer, prometheus_api: Prometheus, series_key: SeriesKey
) -> None:
    exporter.set_traffic(series_key, rps=10, latency_seconds=0.125)
    # 30 requests: the last scrape is at least 2s after the first, so seconds of data precede the stop.
    wait_for_value(prometheus_api, f"sum({selector(series_key, 'http_requests_total')})", lambda n: n >= 30)
    url = prometheus.url
    stopped_at = datetime.now(UTC)

    prometheus.stop()
    down = prometheus_api.instant(mean_latency(series_key))
    with pytest.raises(ConnectionError) as unreachable:
        prometheus_api.syntax_error("vector(1)")
    prometheus.start()
    before_the_stop = prometheus_api.range(
        mean_latency(series_key), stopped_at - timedelta(minutes=1), stopped_at, 1.0
    )

    assert (down.outcome, down.value) == ("error", None)
    assert down.message == f"cannot reach {url}: Connection refused"
    assert "Connection refused" in str(unreachable.value)
    assert prometheus.url == url
    assert before_the_stop.outcome == "values"
    assert before_the_stop.values
    assert all(value == pytest.approx(0.125) for value in before_the_stop.values)


# --- behaviours only a local HTTP server can show ---


@dataclass
class FakeAnswer:
    status: int = 200
    body: bytes = json.dumps(PROMETHEUS_VECTOR_OF_42).encode()
    content_type: str = "application/json"
    delay: threading.Event | None = None  # answer only once this is set
    requests: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def fake_prometheus(answer: FakeAnswer, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A local HTTP(S) server that records every request's headers and answers as `answer` says."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer.requests.append(dict(self.headers.items()))
            if answer.delay is not None:
                answer.delay.wait(10)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except OSError:
                pass  # the client gave up waiting, as the timeout test wants

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        if answer.delay is not None:
            answer.delay.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def http_server() -> Iterator[tuple[str, FakeAnswer]]:
    answer = FakeAnswer()
    with fake_prometheus(answer) as url:
        yield url, answer


def test_a_slow_prometheus_times_out(http_server: tuple[str, FakeAnswer]) -> None:
    url, answer = http_server
    answer.delay = threading.Event()
    api = Prometheus(Connection(address=url, timeout=0.3))

    started = time.monotonic()
    sample = api.instant("vector(1)")
    took = time.monotonic() - started

    assert (sample.outcome, sample.value) == ("error", None)
    assert sample.message == f"timed out after 0.3s waiting for {url}"
    assert 0.3 <= took < 1.5  # no retry
    assert len(answer.requests) == 1


def test_extra_headers_and_bearer_token_are_sent(http_server: tuple[str, FakeAnswer]) -> None:
    url, answer = http_server
    connection = Connection(address=url + "/", headers={"X-Scope-OrgID": "team-a"}, bearer_token="s3cret")

    sample = Prometheus(connection).instant("vector(42)")

    assert (sample.outcome, sample.value) == ("value", 42.0)
    [headers] = answer.requests
    assert headers["X-Scope-OrgID"] == "team-a"
    assert headers["Authorization"] == "Bearer s3cret"


def test_basic_auth_is_sent(http_server: tuple[str, FakeAnswer]) -> None:
    url, answer = http_server

    sample = Prometheus(Connection(address=url, basic_auth=("alice", "pa:ss"))).instant("vector(42)")

    assert sample.outcome == "value"
    [headers] = answer.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pa:ss").decode()


def test_an_error_page_that_is_not_prometheus_is_reported_and_blocks_syntax_checks(
    http_server: tuple[str, FakeAnswer],
) -> None:
    url, answer = http_server
    answer.status, answer.content_type = 502, "text/html"
    answer.body = b"<html><body>502 Bad Gateway</body></html>"
    api = Prometheus(Connection(address=url))

    sample = api.instant("vector(1)")

    assert sample.outcome == "error"
    assert sample.message == "HTTP 502 Bad Gateway: <html><body>502 Bad Gateway</body></html>"
    with pytest.raises(ConnectionError, match="HTTP 502"):
        api.syntax_error("vector(1)")


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"<html>login</html>", "answered with something other than JSON"),
        (b'{"status": "success", "data": {}}', "answered without a Prometheus query result"),
        (
            b'{"data": {"result": [{"metric": {}, "value": []}]}}',
            "answered without a Prometheus query result",
        ),
    ],
    ids=["html", "no-result", "no-value"],
)
def test_a_200_answer_that_is_not_a_query_result_is_an_error(
    http_server: tuple[str, FakeAnswer], body: bytes, complaint: str
) -> None:
    url, answer = http_server
    answer.body = body

    sample = Prometheus(Connection(address=url)).instant("vector(1)")

    assert (sample.outcome, sample.value) == ("error", None)
    assert sample.message.startswith(f"{url} {complaint}")


# --- TLS with a private CA ---


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_certificate: Path
    server_key: Path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A private CA and a certificate it signed for 127.0.0.1, made by trustme."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA(organization_name="shepherd test CA")
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.crt"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    return Certificates(folder / "ca.crt", folder / "server.crt", folder / "server.key")


@pytest.fixture
def https_url(certificates: Certificates) -> Iterator[str]:
    """A Prometheus-like server whose TLS certificate the private CA signed."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificates.server_certificate, certificates.server_key)
    with fake_prometheus(FakeAnswer(), tls) as url:
        yield url


def test_a_private_ca_file_is_trusted(https_url: str, certificates: Certificates) -> None:
    sample = Prometheus(Connection(address=https_url, ca_file=str(certificates.ca))).instant("vector(42)")

    assert (sample.outcome, sample.value) == ("value", 42.0)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_an_unknown_ca_is_refused_unless_verification_is_skipped(https_url: str) -> None:
    refused = Prometheus(Connection(address=https_url)).instant("vector(42)")
    skipped = Prometheus(Connection(address=https_url, insecure_skip_verify=True)).instant("vector(42)")

    assert refused.outcome == "error"
    assert "CERTIFICATE_VERIFY_FAILED" in refused.message
    assert (skipped.outcome, skipped.value) == ("value", 42.0)


# --- the Prometheus server bench itself ---


def test_a_missing_prometheus_names_the_debian_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(promserver, "DEBIAN_BINARY", str(tmp_path / "prometheus"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(PrometheusNotInstalled, match="Debian package `prometheus`"), PrometheusServer():
        pass


def test_a_prometheus_that_exits_at_start_names_its_log(tmp_path: Path) -> None:
    failing = tmp_path / "prometheus"
    failing.write_text("#!/bin/sh\necho 'err: cannot start, bad flag' >&2\nexit 3\n")
    failing.chmod(0o755)
    server = PrometheusServer(binary=str(failing))

    with pytest.raises(PrometheusFailed) as failed:
        server.start()

    assert "exited while starting" in str(failed.value)
    assert str(server.log_path) in str(failed.value)
    assert "err: cannot start, bad flag" in str(failed.value)
    assert "cannot start, bad flag" in server.log_path.read_text()
    assert not server.running
    shutil.rmtree(server.log_path.parent)  # a failed start keeps its folder for the log


def test_a_prometheus_that_cannot_scrape_in_time_says_which_target() -> None:
    target = f"127.0.0.1:{promserver.free_port()}"  # nothing listens there
    server = PrometheusServer([target], ready_timeout=0.5)

    with pytest.raises(PrometheusFailed) as failed:
        server.start()

    assert f"did not scrape {target} (not discovered yet) within 0.5s" in str(failed.value)
    assert str(server.log_path) in str(failed.value)
    assert not server.running
    shutil.rmtree(server.log_path.parent)  # a failed start keeps its folder for the log
