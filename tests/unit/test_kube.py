"""The adapter's pure helpers (its calls run against the local API in the integration stories)."""

from __future__ import annotations

import kubernetes
import pytest

from shepherd.kube import _client_rejection, secret_text


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
