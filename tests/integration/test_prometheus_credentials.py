"""Story: a tenant's Prometheus needs a token and a private CA, kept in Secrets the Release names."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from shepherd.core.spec import PrometheusSpec
from shepherd.kube import KubeAPI, ReleaseKey, load_configuration
from shepherd.lab.localapi import LocalAPIThread
from shepherd.measure import SecretProblem, connection_for

KEY = ReleaseKey("default", "shop")


def secret(name: str, **data: str) -> str:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded})


def spec(**refs: str | None) -> PrometheusSpec:
    return PrometheusSpec(
        address="https://mimir.example:443/prometheus",
        secret=refs.get("secret"),
        ca_secret=refs.get("ca"),
        insecure_skip_verify=False,
        headers={"X-Scope-OrgID": "shop"},
        timeout=timedelta(seconds=3),
    )


def test_token_and_ca_come_from_the_named_secrets(local_api: LocalAPIThread, kubectl: object) -> None:
    kubectl("apply", "-f", "-", input=secret("prom-token", token="s3cret\n"))  # type: ignore[operator]
    kubectl("apply", "-f", "-", input=secret("prom-ca", **{"ca.crt": "-----BEGIN CERTIFICATE-----\n"}))  # type: ignore[operator]
    api = KubeAPI(load_configuration(str(local_api.kubeconfig_path)))
    connection = connection_for(api, KEY, spec(secret="prom-token", ca="prom-ca"))
    assert connection.bearer_token == "s3cret"
    assert connection.basic_auth is None
    assert connection.headers == {"X-Scope-OrgID": "shop"}
    assert connection.timeout == 3.0
    assert connection.ca_file is not None
    assert Path(connection.ca_file).read_text() == "-----BEGIN CERTIFICATE-----\n"


def test_basic_auth_and_clear_errors(local_api: LocalAPIThread, kubectl: object) -> None:
    kubectl("apply", "-f", "-", input=secret("prom-basic", username="shepherd", password="pw"))  # type: ignore[operator]
    kubectl("apply", "-f", "-", input=secret("prom-empty", other="x"))  # type: ignore[operator]
    api = KubeAPI(load_configuration(str(local_api.kubeconfig_path)))
    assert connection_for(api, KEY, spec(secret="prom-basic")).basic_auth == ("shepherd", "pw")
    with pytest.raises(
        SecretProblem, match=re.escape("spec.analysis.prometheus.secretRef: Secret default/missing not found")
    ):
        connection_for(api, KEY, spec(secret="missing"))
    with pytest.raises(SecretProblem, match=re.escape("must hold `token`, or `username` and `password`")):
        connection_for(api, KEY, spec(secret="prom-empty"))
