"""What the release board costs: first render, a status change to the open page, and the server at rest.

N Releases (1,000; --smoke: 20) on the local API, each with a status as the operator leaves it mid-canary;
`shepherd dashboard` started on it as a separate process, read-only, as a user would run it; then:
1. time to first render: from the process's start until the board answers with all N Releases;
2. time from a status change (a merge patch of one Release's status) until an open board in Chromium
   shows it, pushed over server-sent events without a reload (p50/p99);
3. the server's RSS and CPU at rest (nothing changing, one page open), over a few seconds.

Run: .venv/bin/python bench/dashboard.py [--smoke]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
from playwright.sync_api import sync_playwright

from benchlib import REPO, admin_client, fail, parser, spread, wait_for
from shepherd import crdschema
from shepherd.lab.localapi import LocalAPIThread, install_crds

CHROMIUM = os.environ.get("SHEPHERD_CHROMIUM", "/usr/bin/chromium")
NAMESPACES = 10
GROUP, VERSION, PLURAL = "shepherd.dev", "v1alpha1", "releases"


def release(index: int) -> dict[str, Any]:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"setWeight": 100}]
    container = {"name": "app", "image": f"example/app{index}:1.1.0"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Release",
        "metadata": {"name": f"app-{index}", "namespace": f"team-{index % NAMESPACES}"},
        "spec": {
            "version": "1.1.0",
            "components": [{"name": "app", "replicas": 2, "template": {"spec": {"containers": [container]}}}],
            "strategy": {"canary": {"steps": steps}},
        },
    }


def status(weight: int, step: int) -> dict[str, Any]:
    return {
        "status": {
            "phase": "Paused",
            "revision": 2,
            "version": "1.1.0",
            "stableVersion": "1.0.0",
            "canaryWeight": weight,
            "currentStep": step,
        }
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mib(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def board_rows(url: str) -> int:
    with urllib.request.urlopen(url, timeout=60) as answer:
        body = answer.read().decode()
    return body.count("<tr data-release=")


def main() -> None:
    args = parser(__doc__).parse_args()
    count, changes, rest_seconds = (20, 3, 2.0) if args.smoke else (1000, 20, 10.0)
    if not Path(CHROMIUM).is_file():
        fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="shepherd-bench-") as folder:
        kubeconfig = Path(folder) / "kubeconfig"
        with (
            LocalAPIThread(validate_custom_object=crdschema.validate, kubeconfig_path=kubeconfig) as local,
            admin_client(kubeconfig) as client,
        ):
            install_crds(local.url, sorted((REPO / "crds").glob("*.yaml")))
            core = kubernetes.client.CoreV1Api(client)
            custom = kubernetes.client.CustomObjectsApi(client)
            for n in range(NAMESPACES):
                core.create_namespace({"metadata": {"name": f"team-{n}"}})
            for index in range(count):
                made = release(index)
                meta = made["metadata"]
                custom.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, made)
                custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], status(25, 1)
                )
            port = free_port()
            url = f"http://127.0.0.1:{port}/"
            command = [sys.executable, "-m", "shepherd.cli", "dashboard", "--kubeconfig", str(kubeconfig)]
            started = time.monotonic()
            server = subprocess.Popen(
                [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            try:

                def rendered() -> bool:
                    if server.poll() is not None:
                        fail(f"the dashboard exited: {server.stderr.read() if server.stderr else ''}")
                    try:
                        return board_rows(url) == count
                    except OSError:
                        return False

                wait_for("the first render of the board", rendered, timeout=120, poll=0.05)
                first_render = time.monotonic() - started
                warm = []
                for _ in range(5):
                    begun = time.monotonic()
                    board_rows(url)
                    warm.append(time.monotonic() - begun)
                shown: list[float] = []
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                    page = browser.new_page()
                    page.goto(url)
                    page.wait_for_function("document.body.dataset.live === 'connected'", timeout=30_000)
                    for change in range(changes):
                        index = change % count
                        name, namespace = f"app-{index}", f"team-{index % NAMESPACES}"
                        weight = 50 + change  # a weight no Release showed before
                        cell = f'tr[data-release="{namespace}/{name}"] td.traffic'
                        begun = time.monotonic()
                        custom.patch_namespaced_custom_object_status(
                            GROUP, VERSION, namespace, PLURAL, name, status(weight, 2)
                        )
                        page.wait_for_function(
                            "([cell, text]) => document.querySelector(cell)?.textContent.startsWith(text)",
                            arg=[cell, f"{weight}%"],
                            polling="raf",
                            timeout=30_000,
                        )
                        shown.append(time.monotonic() - begun)
                    before_cpu, before = cpu_seconds(server.pid), time.monotonic()
                    time.sleep(rest_seconds)  # the window over which CPU at rest is measured
                    cpu_at_rest = (cpu_seconds(server.pid) - before_cpu) / (time.monotonic() - before)
                    rss = rss_mib(server.pid)
                    browser.close()
            finally:
                server.terminate()
                server.wait(timeout=10)
    figures = {
        "releases": count,
        "first_render_seconds": round(first_render, 3),
        "board_render_seconds": spread(warm, "board renders"),
        "status_change_to_page_seconds": spread(shown, "status changes shown"),
        "rss_mib_at_rest": round(rss, 1),
        "cpu_percent_at_rest": round(100 * cpu_at_rest, 2),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
