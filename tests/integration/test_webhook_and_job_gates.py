"""Stories of checks before traffic moves: a CI status behind a webhook, a smoke test run as a Job."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from cluster import Cluster, quickstart_release


@dataclass
class Endpoint:
    """What the CI endpoint answers now; every request it receives is kept."""

    status: int = 503
    body: str = "pipeline running"
    stalled: threading.Event = field(default_factory=threading.Event)  # set: hold requests unanswered
    released: threading.Event = field(default_factory=threading.Event)
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def ci() -> Iterator[tuple[str, Endpoint]]:
    endpoint = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            endpoint.requests.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
            )
            if endpoint.stalled.is_set():
                endpoint.released.wait(timeout=30)  # a CI that never answers in time
            payload = endpoint.body.encode()
            self.send_response(endpoint.status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", endpoint
    endpoint.released.set()
    server.shutdown()
    server.server_close()


def ci_gate(url: str, **extra: Any) -> list[dict[str, Any]]:
    webhook = {"url": url + "/status/{{release}}/{{version}}", "interval": "1s", **extra}
    return [{"name": "ci-green", "webhook": webhook}]


def test_a_webhook_gate_waits_until_ci_answers_2xx(cluster: Cluster, ci: tuple[str, Endpoint]) -> None:
    url, endpoint = ci
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ci-token"},
        "stringData": {"Authorization": "Bearer s3cret-token"},
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    endpoint.body = "pipeline 7 running\nstep 3 of 5"
    gates = ci_gate(url, method="POST", headersSecretRef={"name": "ci-token"})
    cluster.apply(quickstart_release("1.1.0", gates=gates))

    status = cluster.wait_status("the CI's answer", lambda s: "HTTP 503" in str(s.get("gates")))
    assert status["phase"] == "Gating" and status["gates"][0]["message"] == "HTTP 503: pipeline 7 running"
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}, "no traffic moves before CI is green"
    request = endpoint.requests[-1]
    assert (request["method"], request["path"]) == ("POST", "/status/shop/1.1.0")
    assert request["headers"]["Authorization"] == "Bearer s3cret-token"
    assert json.loads(request["body"]) == {
        "namespace": "default",
        "release": "shop",
        "version": "1.1.0",
        "revision": 2,
        "gate": "ci-green",
    }

    endpoint.status, endpoint.body = 200, "pipeline 7 passed"
    status = cluster.wait_phase("Succeeded", revision=2)
    audit = next(h for h in status["history"] if h["revision"] == 2)["gates"][0]
    assert audit["message"] == "HTTP 200: pipeline 7 passed"
    shown = json.dumps(status) + json.dumps(cluster.events())
    assert "s3cret-token" not in shown, "header values never reach status or events"


def test_a_webhook_that_times_out_or_is_down_never_passes(cluster: Cluster, ci: tuple[str, Endpoint]) -> None:
    url, endpoint = ci
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    endpoint.status, endpoint.body = 200, "green"
    endpoint.stalled.set()
    cluster.apply(quickstart_release("1.1.0", gates=ci_gate(url, timeout="1s")))
    status = cluster.wait_status(
        "a timed-out request", lambda s: "no answer within 1s" in str(s.get("gates")), timeout=30
    )
    assert status["phase"] == "Gating"

    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there any more
    gates = ci_gate(f"http://127.0.0.1:{port}")
    gates[0]["timeout"] = "4s"
    cluster.apply(quickstart_release("1.1.0", gates=gates))
    status = cluster.wait_status("a refused connection", lambda s: "refused" in str(s.get("gates")))
    message = status["gates"][0]["message"]
    assert message.startswith(f"GET http://127.0.0.1:{port}/status/shop/1.1.0: cannot connect:"), message
    assert status["phase"] == "Gating"
    status = cluster.wait_phase("Failed", revision=2)
    assert status["reason"] == "GateFailed"
    assert "gate ci-green did not pass within its timeout 4s" in status["message"]
    assert cluster.images() == {
        "shop-api": "ghcr.io/example/shop-api:1.0.0",
        "shop-web": "ghcr.io/example/shop-web:1.0.0",
    }


def smoke_test(behaviour: str) -> list[dict[str, Any]]:
    pod = {
        "metadata": {"annotations": {"kubelet.shepherd.dev/behaviour": behaviour}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "smoke", "image": "shop/smoke:1"}]},
    }
    return [{"name": "smoke", "job": {"template": {"spec": {"backoffLimit": 0, "template": pod}}}}]


def test_a_job_gate_passes_when_its_smoke_test_succeeds(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", gates=smoke_test("succeed")))
    status = cluster.wait_phase("Succeeded", revision=2)
    audit = next(h for h in status["history"] if h["revision"] == 2)["gates"][0]
    assert audit["message"] == "job/shop-gate-smoke-r2 succeeded"
    job = json.loads(cluster.kubectl("get", "job", "shop-gate-smoke-r2", "-o", "json").stdout)
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Release", "shop")
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])


def test_a_failed_smoke_test_fails_the_revision_and_names_its_job(cluster: Cluster) -> None:
    cluster.apply(quickstart_release("1.0.0"))
    cluster.wait_phase("Succeeded", revision=1)
    cluster.apply(quickstart_release("1.1.0", gates=smoke_test("fail")))
    status = cluster.wait_phase("Failed", revision=2)
    assert status["reason"] == "GateFailed"
    assert "gate smoke failed: job/shop-gate-smoke-r2 failed: BackoffLimitExceeded" in status["message"]
    assert "kubectl logs job/shop-gate-smoke-r2" in status["message"]
    assert cluster.replicas() == {"shop-api": 4, "shop-web": 2}, "no canary ever started"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "GateFailed"
