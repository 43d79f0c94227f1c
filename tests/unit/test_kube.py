"""The adapter's pure helpers (its calls run against the local API in the integration stories)."""

from __future__ import annotations

import pytest

from shepherd.kube import secret_text


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
