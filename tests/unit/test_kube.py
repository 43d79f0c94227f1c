"""The adapter's pure helpers (its calls run against the local API in the integration stories)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import kubernetes
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from shepherd.kube import KubeAPI, ReleaseKey, _client_rejection, retry_after, secret_text


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A server that accepts connections and never answers (a dead node behind a load balancer)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(timeout=5)
    for connection in accepted:
        connection.close()


def test_a_request_that_is_never_answered_ends_at_its_deadline(black_hole: str) -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = black_hole
    api = KubeAPI(configuration, request_seconds=0.3)
    ended: list[BaseException] = []

    def call() -> None:
        try:
            api.get_release(ReleaseKey("default", "shop"))
        except BaseException as error:
            ended.append(error)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(timeout=20)
    assert not caller.is_alive(), "the request waited for an answer that never came"
    assert isinstance(ended[0], urllib3.exceptions.HTTPError), ended


def throttled(value: str) -> ApiException:
    error = ApiException(status=429, reason="Too Many Requests")
    error.headers = {"Retry-After": value}
    return error


def test_retry_after_reads_a_429_also_behind_the_error_it_caused() -> None:
    assert retry_after(throttled("3")) == 3.0
    try:
        raise RuntimeError("apply failed") from throttled("7")
    except RuntimeError as wrapped:
        assert retry_after(wrapped) == 7.0
    assert retry_after(throttled("Wed, 21 Oct 2026 07:28:00 GMT")) is None, "a date: the usual backoff"
    assert retry_after(ApiException(status=500)) is None
    assert retry_after(ValueError("no")) is None


def test_a_secret_is_decoded_to_text() -> None:
    secret = {"data": {"token": "czNjcmV0", "user": "YWxpY2U="}}
    assert secret_text(secret) == {"token": "s3cret", "user": "alice"}
    assert secret_text(secret, {"user"}) == {"user": "alice"}
    assert secret_text({}) == {}


def test_a_value_that_is_not_text_is_named_and_only_when_asked_for() -> None:
    secret = {"data": {"url": "aHR0cDovL2hvb2s=", "cert": "/w=="}}  # cert is the byte 0xff
    with pytest.raises(ValueError, match="key cert of the Secret is not text"):
        secret_text(secret)
    assert secret_text(secret, {"url"}) == {"url": "http://hook"}


def test_a_template_the_client_schema_refuses_becomes_a_rejection_naming_the_field() -> None:
    apps = kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(kubernetes.client.Configuration()))
    manifest = {
        "metadata": {"name": "shop-api-canary"},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "spec": {"containers": [{"name": "api", "image": "api:1", "env": "LOG_LEVEL=debug"}]}
            },
        },
    }
    with pytest.raises(ValueError) as raised:
        apps.create_namespaced_deployment("shop", manifest)  # refused before any request is made

    rejection = _client_rejection(raised.value, "Deployment", "shop-api-canary")

    assert rejection is not None
    assert rejection.field == "spec.template.spec.containers[0].env"
    assert rejection.code == 0
    assert rejection.describe().startswith(
        "the Kubernetes API schema refused Deployment shop-api-canary: spec.template.spec.containers[0].env: "
    )


def test_a_value_error_that_is_not_a_schema_check_is_not_a_rejection() -> None:
    assert _client_rejection(ValueError("something else"), "Deployment", "shop-api") is None
