"""A real Gateway API data plane for the real control plane: Traefik v3 and a stand-in kube-proxy.

Traefik (built by `make gateway-binaries`, part of `make test`, from the Go module proxy's
github.com/traefik/traefik/v3; not by `make cluster-binaries`, its cold build being the longest) runs as a
plain process with its Kubernetes Gateway API provider, authenticated by a TokenRequest token of a
ServiceAccount bound to the ClusterRole Traefik documents. It serves the GatewayClass `traefik` and a
Gateway whose one HTTP listener is a free port of 127.0.0.1, writes the status of the Gateway and of its
HTTPRoutes (Accepted, ResolvedRefs, observedGeneration) itself, and exposes its Prometheus metrics on
another free port.

Where requests go: the API server refuses a loopback address in an EndpointSlice ("may not be in the
loopback range"), and nothing here may be reached but loopback addresses. So Traefik sends each
backendRef's share to its Service's ClusterIP (`nativeLBByDefault`), which the control plane allocates
from a loopback range (SERVICE_CLUSTER_IP_RANGE), and `ServiceProxy` plays kube-proxy: it listens on
each Service's ClusterIP and port and answers every request as one of the ready endpoints that the real
endpointslice controller put in the Service's EndpointSlices, chosen at random as kube-proxy does,
with that pod's version (its `app.kubernetes.io/version` label, else its image's tag), failing with
500 at the error rate a test set for that version. Pod IPs are never connected to.
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import math
import os
import random
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from prometheus_client.parser import text_string_to_metric_families

from shepherd.kube import load_configuration
from shepherd.lab.controlplane import ControlPlane, ControlPlaneError, RequestError, free_port
from shepherd.lab.processes import spawn, stop_process
from shepherd.lab.watching import Lifecycle, follow, start_thread

Json = dict[str, Any]

TRAEFIK = "traefik"
CONTROLLER_NAME = "traefik.io/gateway-controller"
GATEWAY_GROUP = "gateway.networking.k8s.io"
VERSION_LABEL = "app.kubernetes.io/version"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# What Traefik's Kubernetes Gateway provider reads and writes (its documented ClusterRole).
TRAEFIK_RULES = [
    {
        "apiGroups": [""],
        "resources": ["namespaces", "services", "secrets", "configmaps"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": [GATEWAY_GROUP],
        "resources": [
            "gatewayclasses",
            "gateways",
            "httproutes",
            "grpcroutes",
            "tcproutes",
            "tlsroutes",
            "referencegrants",
            "backendtlspolicies",
        ],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": [GATEWAY_GROUP],
        "resources": [
            "gatewayclasses/status",
            "gateways/status",
            "httproutes/status",
            "grpcroutes/status",
            "tcproutes/status",
            "tlsroutes/status",
            "backendtlspolicies/status",
        ],
        "verbs": ["update", "patch"],
    },
]

# Traefik's count of one service's requests, by code.
SERVICE_REQUESTS = "traefik_service_requests_total"
CONFIG_RELOADS = "traefik_config_reloads_total"

logger = logging.getLogger(__name__)


def traefik_problem(bin_dir: Path) -> str | None:
    """Why Traefik cannot run from bin_dir, or None when it can."""
    if not os.access(bin_dir / TRAEFIK, os.X_OK):
        return (
            f"no Traefik in {bin_dir}: `make gateway-binaries` (part of `make test`) builds it from the "
            "Go module proxy (cold: 17 CPU-minutes, 9 to 26 minutes on 2 cores, 5 GB of module and build "
            "cache)"
        )
    return None


def within_binomial(observed: int, total: int, share: float) -> bool:
    """Within four standard deviations of a binomial count (a false alarm once in about 16,000 runs)."""
    return abs(observed - total * share) <= 4 * math.sqrt(total * share * (1 - share)) + 1


@dataclass(frozen=True)
class Split:
    """Requests sent through the gateway: their answers by (code, version), and Traefik's own count of the
    same requests by (service, code), the service being a Service's name in the route's namespace."""

    answers: Counter[tuple[int, str]]
    counted: Counter[tuple[str, str]]

    @property
    def requests(self) -> int:
        return sum(self.answers.values())

    def answered_by(self, version: str) -> int:
        """The requests a pod of `version` answered, whatever the code."""
        return sum(n for (_, answered), n in self.answers.items() if answered == version)

    def counted_for(self, service: str) -> int:
        """The requests Traefik counted as sent to `service`, whatever the code."""
        return sum(n for (name, _), n in self.counted.items() if name == service)


def _create(control_plane: ControlPlane, path: str, body: Mapping[str, Any]) -> None:
    try:
        control_plane.request("POST", path, body)
    except RequestError as error:
        if error.status != 409:
            raise


@dataclass
class Traefik(Lifecycle):
    """Traefik serving Gateway `namespace`/`gateway` (GatewayClass `traefik`) on a free port of 127.0.0.1.

    `url` is the Gateway's HTTP listener; `metrics_url` Traefik's Prometheus metrics."""

    control_plane: ControlPlane
    bin_dir: Path
    workdir: Path
    namespace: str = "gateway-system"
    gateway: str = "edge"
    gateway_class: str = "traefik"
    port: int = 0
    metrics_port: int = 0
    popen: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log(self) -> Path:
        return self.workdir / "traefik.log"

    def start(self, timeout: float = 60.0) -> None:
        problem = traefik_problem(self.bin_dir)
        if problem is not None:
            raise ControlPlaneError(problem)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        token = self._service_account_token()
        (self.workdir / "token").write_text(token)
        plane = self.control_plane
        provider = "--providers.kubernetesGateway"
        self.args = [
            str(self.bin_dir / TRAEFIK),
            f"--entryPoints.web.address=127.0.0.1:{self.port}",
            # Its own entry point: metrics, /ping and the read-only API of the live configuration.
            f"--entryPoints.traefik.address=127.0.0.1:{self.metrics_port}",
            # Stopped, it closes at once: no request of a test is in flight by then.
            "--entryPoints.web.transport.lifeCycle.graceTimeOut=0s",
            "--entryPoints.traefik.transport.lifeCycle.graceTimeOut=0s",
            f"{provider}=true",
            f"{provider}.endpoint={plane.url}",
            f"{provider}.token={self.workdir / 'token'}",
            f"{provider}.certAuthFilePath={plane.pki / 'ca.crt'}",
            # Each backendRef's share goes to its Service's ClusterIP, where ServiceProxy listens.
            f"{provider}.nativeLBByDefault=true",
            f"{provider}.statusAddress.ip=127.0.0.1",
            f"{provider}.throttleDuration=0s",
            "--metrics.prometheus=true",
            "--metrics.prometheus.entryPoint=traefik",
            "--metrics.prometheus.addServicesLabels=true",
            "--metrics.prometheus.addRoutersLabels=true",
            "--ping=true",
            "--ping.entryPoint=traefik",
            "--api.insecure=true",
            "--log.level=INFO",
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
        ]
        self.popen = spawn(self.args, self.log)
        deadline = time.monotonic() + timeout
        self._wait_for_ping(deadline)
        self._create_gateway()
        self._wait_for_gateway(deadline)

    def stop(self) -> None:
        if self.popen is not None:
            stop_process(self.popen)

    def log_tail(self, lines: int = 40) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return str(response.read().decode())

    def served_requests(self, namespace: str) -> tuple[Counter[tuple[str, str]], float]:
        """Traefik's own count of the requests it sent to each Service of `namespace`, by (service, code),
        and how many times its configuration was reloaded so far, read from one scrape of its metrics."""
        counts: Counter[tuple[str, str]] = Counter()
        reloads = 0.0
        prefix, suffix = f"{namespace}-", "@kubernetesgateway"
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == CONFIG_RELOADS:
                    reloads = sample.value
                name = sample.labels.get("service", "")
                if sample.name != SERVICE_REQUESTS or not (name.startswith(prefix) and name.endswith(suffix)):
                    continue
                # Traefik names it <namespace>-<service>-<scheme>-<port>.
                short = re.sub(r"-(http|https|h2c)-\d+$", "", name.removeprefix(prefix).removesuffix(suffix))
                counts[(short, sample.labels["code"])] += int(sample.value)
        return counts, reloads

    def send(self, host: str, count: int) -> Counter[tuple[int, str]]:
        """`count` GETs of / through the Gateway for `host`, one after another: their (code, version)."""
        answers: Counter[tuple[int, str]] = Counter()
        for _ in range(count):
            code, answer = get(self.url, host)
            answers[(code, str(answer.get("version", "")))] += 1
        return answers

    def split(self, host: str, namespace: str, count: int, attempts: int = 5) -> Split:
        """Send `count` requests for `host` and read how Traefik counted them for the namespace's Services.

        A configuration reload that leaves a Service out, however briefly (any namespace's change reloads
        it), deletes that Service's series, which then count again from zero: a split during which Traefik
        reloaded is sent again, up to `attempts` times, as its count may not be the requests'."""
        for _ in range(attempts):
            before, reloads = self.served_requests(namespace)
            answers = self.send(host, count)
            after, reloads_after = self.served_requests(namespace)
            if reloads_after == reloads:
                return Split(answers, after - before)
        raise RuntimeError(f"Traefik reloaded its configuration during each of {attempts} splits of {count}")

    def api(self, path: str) -> Any:
        """Traefik's read-only API of its live configuration, e.g. `/api/http/services`."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def weights(self, namespace: str, route: str) -> dict[str, int]:
        """The weights Traefik routes by for each rule of HTTPRoute namespace/route, by backend service name
        (`<namespace>-<service>-<port>`), as its live configuration holds them."""
        weights: dict[str, int] = {}
        for service in self.api("/api/http/services"):
            if not service["name"].startswith(f"httproute-{namespace}-{route}-"):
                continue
            for backend in (service.get("weighted") or {}).get("services") or []:
                weights[backend["name"].removesuffix("@kubernetesgateway")] = int(backend.get("weight", 1))
        return weights

    def parent_ref(self) -> Json:
        """The parentRef of a route that this Gateway should carry."""
        return {"name": self.gateway, "namespace": self.namespace}

    def _service_account_token(self) -> str:
        plane, name = self.control_plane, "traefik"
        _create(plane, "/api/v1/namespaces", {"metadata": {"name": self.namespace}})
        _create(plane, f"/api/v1/namespaces/{self.namespace}/serviceaccounts", {"metadata": {"name": name}})
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        _create(plane, f"{rbac}/clusterroles", {"metadata": {"name": name}, "rules": TRAEFIK_RULES})
        binding = {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": self.namespace}],
        }
        _create(plane, f"{rbac}/clusterrolebindings", binding)
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 86400},
        }
        answer = plane.request(
            "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{name}/token", request
        )
        return str(answer["status"]["token"])

    def _create_gateway(self) -> None:
        api = f"/apis/{GATEWAY_GROUP}/v1"
        gateway_class = {
            "apiVersion": f"{GATEWAY_GROUP}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": self.gateway_class},
            "spec": {"controllerName": CONTROLLER_NAME},
        }
        _create(self.control_plane, f"{api}/gatewayclasses", gateway_class)
        gateway = {
            "apiVersion": f"{GATEWAY_GROUP}/v1",
            "kind": "Gateway",
            "metadata": {"name": self.gateway, "namespace": self.namespace},
            "spec": {
                "gatewayClassName": self.gateway_class,
                # Traefik matches a listener to the entry point of the same port.
                "listeners": [
                    {
                        "name": "http",
                        "protocol": "HTTP",
                        "port": self.port,
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        }
        path = f"{api}/namespaces/{self.namespace}/gateways"
        try:
            self.control_plane.request("POST", path, gateway)
        except RequestError as error:
            if error.status != 409:
                raise
            current = self.control_plane.request("GET", f"{path}/{self.gateway}")
            current["spec"] = gateway["spec"]
            self.control_plane.request("PUT", f"{path}/{self.gateway}", current)

    def _check_alive(self) -> None:
        code = self.popen.poll() if self.popen is not None else None
        if code is not None:
            raise ControlPlaneError(f"traefik exited with {code}\n{self.log_tail()}")

    def _wait_for_ping(self, deadline: float) -> None:
        last = "no answer yet"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/ping", timeout=2):
                    return
            except OSError as error:
                last = str(error)
            time.sleep(0.1)
        raise ControlPlaneError(f"traefik did not answer /ping in time ({last})\n{self.log_tail()}")

    def _wait_for_gateway(self, deadline: float) -> None:
        path = f"/apis/{GATEWAY_GROUP}/v1/namespaces/{self.namespace}/gateways/{self.gateway}"
        conditions: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            gateway = self.control_plane.request("GET", path)
            generation = gateway["metadata"]["generation"]
            conditions = {c["type"]: c for c in (gateway.get("status") or {}).get("conditions") or []}
            programmed = conditions.get("Programmed", {})
            if programmed.get("status") == "True" and programmed.get("observedGeneration") == generation:
                return
            time.sleep(0.1)
        raise ControlPlaneError(
            f"traefik did not program Gateway {self.namespace}/{self.gateway} in time: "
            f"{json.dumps(list(conditions.values()))}\n{self.log_tail()}"
        )


@dataclass(frozen=True)
class Endpoint:
    pod: str
    version: str


class ServiceProxy(Lifecycle):
    """kube-proxy for the Services of `namespace`: an HTTP listener on each Service's ClusterIP and port
    answers each request as one ready endpoint of the Service's EndpointSlices, chosen at random, with that
    pod's version (body `{"version": ..., "pod": ...}`, header X-Version), or 500 at the error rate set
    for the version, or 503 when the Service has no ready endpoint."""

    def __init__(
        self, kubeconfig: Path, namespace: str, *, context: str | None = None, seed: int = 0
    ) -> None:
        self.namespace = namespace
        self._client = kubernetes.client.ApiClient(load_configuration(str(kubeconfig), context))
        self._core: Any = kubernetes.client.CoreV1Api(self._client)
        self._discovery: Any = kubernetes.client.DiscoveryV1Api(self._client)
        self._lock = threading.Lock()
        self._slices: dict[str, Json] = {}
        self._versions: dict[str, str] = {}
        self._servers: dict[tuple[str, str, int], http.server.ThreadingHTTPServer] = {}
        self._error_rates: dict[str, float] = {}
        self._random = random.Random(seed)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.answered: dict[tuple[str, str, int], int] = {}  # (service, version, code) -> requests

    def set_error_rate(self, version: str, rate: float) -> None:
        """Answer this share (0 to 1) of the requests that reach a pod of `version` with 500."""
        with self._lock:
            self._error_rates[version] = rate

    def start(self) -> None:
        follows = (
            (
                lambda **kw: self._core.list_namespaced_service(self.namespace, **kw),
                self._on_service,
                "Service",
            ),
            (
                lambda **kw: self._discovery.list_namespaced_endpoint_slice(self.namespace, **kw),
                self._on_slice,
                "EndpointSlice",
            ),
        )
        events = []
        for list_call, handle, what in follows:
            listed = threading.Event()
            events.append(listed)
            watch = functools.partial(
                follow, list_call, handle, listed=listed, stopping=self._stopping, what=what
            )
            start_thread(watch, f"proxy-{what}", self._threads)
        for listed in events:
            if not listed.wait(30):
                raise RuntimeError("the service proxy could not list Services and EndpointSlices within 30 s")

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._client.close()  # type: ignore[no-untyped-call]

    def listening(self, service: str) -> bool:
        with self._lock:
            return any(key[0] == service for key in self._servers)

    def _on_service(self, kind: str, service: Json) -> None:
        name, spec = service["metadata"]["name"], service.get("spec") or {}
        ip = spec.get("clusterIP") or ""
        wanted = (
            set()
            if kind == "DELETED" or not ip.startswith("127.")
            else {
                (name, ip, int(port["port"]))
                for port in spec.get("ports") or []
                if port.get("protocol", "TCP") == "TCP"
            }
        )
        with self._lock:
            gone = [key for key in self._servers if key[0] == name and key not in wanted]
            new = [key for key in wanted if key not in self._servers]
            closing = [self._servers.pop(key) for key in gone]
        for server in closing:
            server.shutdown()
            server.server_close()
        for key in new:
            server = http.server.ThreadingHTTPServer((key[1], key[2]), self._handler(key[0]))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name=f"proxy-{key[0]}", daemon=True).start()
            with self._lock:
                self._servers[key] = server

    def _on_slice(self, kind: str, endpoint_slice: Json) -> None:
        with self._lock:
            if kind == "DELETED":
                self._slices.pop(endpoint_slice["metadata"]["name"], None)
            else:
                self._slices[endpoint_slice["metadata"]["name"]] = endpoint_slice

    def _ready_endpoints(self, service: str) -> list[str]:
        """The pods of the Service's ready endpoints, as the endpointslice controller wrote them."""
        with self._lock:
            slices = [
                s
                for s in self._slices.values()
                if s["metadata"].get("labels", {}).get(SERVICE_NAME_LABEL) == service
            ]
        pods = []
        for endpoint_slice in slices:
            for endpoint in endpoint_slice.get("endpoints") or []:
                ready = (endpoint.get("conditions") or {}).get("ready")
                target = endpoint.get("targetRef") or {}
                if ready and target.get("kind") == "Pod":
                    pods.append(target["name"])
        return sorted(pods)

    def _version(self, pod: str) -> str:
        with self._lock:
            known = self._versions.get(pod)
        if known is not None:
            return known
        read = json.loads(self._core.read_namespaced_pod(pod, self.namespace, _preload_content=False).data)
        labels = read["metadata"].get("labels") or {}
        image = ((read.get("spec") or {}).get("containers") or [{}])[0].get("image", "")
        version = labels.get(VERSION_LABEL) or image.rpartition(":")[2] or "unknown"
        with self._lock:
            self._versions[pod] = version
        return str(version)

    def _answer(self, service: str) -> tuple[int, Json]:
        pods = self._ready_endpoints(service)
        if not pods:
            return 503, {"error": f"no ready endpoint for Service {self.namespace}/{service}"}
        with self._lock:
            pod = self._random.choice(pods)
        version = self._version(pod)
        with self._lock:
            failing = self._random.random() < self._error_rates.get(version, 0.0)
        code = 500 if failing else 200
        with self._lock:
            self.answered[(service, version, code)] = self.answered.get((service, version, code), 0) + 1
        return code, {"version": version, "pod": pod, "service": service}

    def _handler(self, service: str) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle's algorithm and the delayed ACK
            # hold each answer on a kept-alive connection for 40 ms.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                code, answer = proxy._answer(service)
                body = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if "version" in answer:
                    self.send_header("X-Version", answer["version"])
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def get(
    url: str, host: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, Json]:
    """One GET through the gateway: the status code and the JSON answer (empty when it is not JSON)."""
    request = urllib.request.Request(url, headers={"Host": host, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            code, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        code, raw = error.code, error.read()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {}
    return code, answer if isinstance(answer, dict) else {}
